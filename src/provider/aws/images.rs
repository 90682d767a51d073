//! What the deploy stage asks of AWS: images in the stack's ECR repository
//! (resolve a tag to its digest, re-tag a digest registry-side) and the
//! health of the load balancer targets the controller registered (ELBv2).
//! SDK types stay in this file; callers see plain values.

use aws_sdk_ecr::types::ImageIdentifier;

use super::error::{code_of, sdk_error};
use crate::addr::{Address, Domain};
use crate::provider::ProviderError;

/// Manifest media types slipway accepts when reading an image back: what
/// `docker push`/`buildx` write (Docker v2, OCI, and their lists).
const MEDIA_TYPES: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
];

/// ECR and ELBv2 for the deploy stage.
#[derive(Clone)]
pub struct DeployAws {
    ecr: aws_sdk_ecr::Client,
    elbv2: aws_sdk_elasticloadbalancingv2::Client,
    region: String,
    identity: super::Identity,
}

/// An image in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `sha256:…`
    pub digest: String,
    pub tags: Vec<String>,
}

/// How a re-tag went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retag {
    /// The tag now names the image.
    Tagged,
    /// The tag already named exactly this image.
    AlreadyThere,
}

/// One target of a target group and what the load balancer thinks of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    /// The pod IP, for `ip` target groups.
    pub id: String,
    pub port: Option<i32>,
    /// `initial`, `healthy`, `unhealthy`, `draining`, `unused`, `unavailable`.
    pub state: String,
    pub reason: Option<String>,
    pub description: Option<String>,
}

fn repo_addr(repository: &str) -> Address {
    // Repository names are `[a-z0-9._/-]`; an address name allows one `/`.
    let name: String = repository
        .chars()
        .map(|c| if c == '/' { '.' } else { c })
        .collect();
    Address::new(Domain::Aws, "ecr_repository", &name)
        .unwrap_or_else(|_| Address::domain_wide(Domain::Aws))
}

fn target_group_addr(arn: &str) -> Address {
    // arn:…:targetgroup/NAME/ID
    let name = arn.rsplit('/').nth(1).unwrap_or("target_group");
    Address::new(Domain::Aws, "target_group", name)
        .unwrap_or_else(|_| Address::domain_wide(Domain::Aws))
}

impl DeployAws {
    pub(super) fn new(
        config: &aws_types::SdkConfig,
        region: &str,
        identity: super::Identity,
    ) -> Self {
        DeployAws {
            ecr: aws_sdk_ecr::Client::new(config),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(config),
            region: region.to_string(),
            identity,
        }
    }

    /// `work` beside the check that STS accepts the credentials, which it
    /// yields to (see [`super::AwsProvider::gated`]).
    pub async fn gated<T, E: From<super::AwsSetupError>>(
        &self,
        work: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        Ok(self.identity.gate(work).await?.1)
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The repository's URI (`ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME`),
    /// or `None` when it does not exist.
    pub async fn repository_uri_opt(
        &self,
        repository: &str,
    ) -> Result<Option<String>, ProviderError> {
        let addr = repo_addr(repository);
        match self
            .ecr
            .describe_repositories()
            .repository_names(repository)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .repositories()
                .iter()
                .find(|r| r.repository_name() == Some(repository))
                .and_then(|r| r.repository_uri())
                .map(str::to_string)),
            Err(e) if code_of(&e) == Some("RepositoryNotFoundException") => Ok(None),
            Err(e) => Err(sdk_error(&addr, "DescribeRepositories", &e)),
        }
    }

    /// The image a tag or a digest names, or `None` when there is none.
    pub async fn image_opt(
        &self,
        repository: &str,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> Result<Option<Image>, ProviderError> {
        let addr = repo_addr(repository);
        let id = ImageIdentifier::builder()
            .set_image_tag(tag.map(str::to_string))
            .set_image_digest(digest.map(str::to_string))
            .build();
        match self
            .ecr
            .describe_images()
            .repository_name(repository)
            .image_ids(id)
            .send()
            .await
        {
            Ok(out) => Ok(out.image_details().first().and_then(|d| {
                Some(Image {
                    digest: d.image_digest()?.to_string(),
                    tags: d.image_tags().to_vec(),
                })
            })),
            Err(e)
                if matches!(
                    code_of(&e),
                    Some("ImageNotFoundException") | Some("RepositoryNotFoundException")
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(sdk_error(&addr, "DescribeImages", &e)),
        }
    }

    /// Puts `tag` on the image `digest` registry-side: reads its manifest
    /// (`BatchGetImage`) and puts the same manifest under the new tag
    /// (`PutImage`). No layer is pulled or pushed.
    pub async fn retag(
        &self,
        repository: &str,
        digest: &str,
        tag: &str,
    ) -> Result<Retag, ProviderError> {
        let addr = repo_addr(repository);
        // ECR answers a repeat with ImageTagAlreadyExists in repositories
        // with immutable tags: ask what the tag names first.
        if let Some(img) = self.image_opt(repository, Some(tag), None).await? {
            if img.digest == digest {
                return Ok(Retag::AlreadyThere);
            }
            return Err(ProviderError::new(
                &addr,
                "ImageTagAlreadyExistsException",
                format!(
                    "tag `{tag}` in `{repository}` already names `{}`, not `{digest}`",
                    img.digest
                ),
                false,
            ));
        }
        let got = self
            .ecr
            .batch_get_image()
            .repository_name(repository)
            .image_ids(ImageIdentifier::builder().image_digest(digest).build())
            .set_accepted_media_types(Some(MEDIA_TYPES.iter().map(|s| s.to_string()).collect()))
            .send()
            .await
            .map_err(|e| sdk_error(&addr, "BatchGetImage", &e))?;
        let image = got.images().first().ok_or_else(|| {
            let why = got
                .failures()
                .first()
                .and_then(|f| f.failure_reason())
                .unwrap_or("no such image");
            ProviderError::new(
                &addr,
                "ImageNotFoundException",
                format!("image `{digest}` in `{repository}`: {why}"),
                false,
            )
        })?;
        let manifest = image.image_manifest().ok_or_else(|| {
            ProviderError::new(
                &addr,
                "ImageManifestMissing",
                format!("ECR returned no manifest for `{digest}` in `{repository}`"),
                false,
            )
        })?;
        let put = self
            .ecr
            .put_image()
            .repository_name(repository)
            .image_manifest(manifest)
            .set_image_manifest_media_type(image.image_manifest_media_type().map(str::to_string))
            .image_digest(digest)
            .image_tag(tag)
            .send()
            .await;
        match put {
            Ok(_) => Ok(Retag::Tagged),
            Err(e) if code_of(&e) == Some("ImageAlreadyExistsException") => Ok(Retag::AlreadyThere),
            Err(e) if code_of(&e) == Some("ImageTagAlreadyExistsException") => {
                // Someone tagged it meanwhile: fine if it names this image.
                match self.image_opt(repository, Some(tag), None).await? {
                    Some(img) if img.digest == digest => Ok(Retag::AlreadyThere),
                    _ => Err(ProviderError::new(
                        &addr,
                        "ImageTagAlreadyExistsException",
                        format!(
                            "tag `{tag}` already names another image in `{repository}`, whose tags are immutable"
                        ),
                        false,
                    )),
                }
            }
            Err(e) => Err(sdk_error(&addr, "PutImage", &e)),
        }
    }

    /// The targets of a target group and their health.
    pub async fn target_health(
        &self,
        target_group_arn: &str,
    ) -> Result<Vec<TargetHealth>, ProviderError> {
        let addr = target_group_addr(target_group_arn);
        let out = self
            .elbv2
            .describe_target_health()
            .target_group_arn(target_group_arn)
            .send()
            .await
            .map_err(|e| sdk_error(&addr, "DescribeTargetHealth", &e))?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let target = d.target()?;
                let health = d.target_health();
                Some(TargetHealth {
                    id: target.id()?.to_string(),
                    port: target.port(),
                    state: health
                        .and_then(|h| h.state())
                        .map_or("unknown".to_string(), |s| s.as_str().to_string()),
                    reason: health
                        .and_then(|h| h.reason())
                        .map(|r| r.as_str().to_string()),
                    description: health.and_then(|h| h.description()).map(str::to_string),
                })
            })
            .collect())
    }
}
