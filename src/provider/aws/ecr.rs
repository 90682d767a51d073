//! The ECR repository and its lifecycle policy.

use std::collections::BTreeMap;

use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageScanningConfiguration, ImageTagMutability, Tag,
};
use serde_json::{Value, json};

use super::error::{absent_ok, code_of, invalid, sdk_error};
use super::tags::{ADDRESS_TAG, STACK_TAG};
use super::{Aws, b, batch_addr, live, s, s_opt};
use crate::addr::Address;
use crate::provider::{OpContext, ProviderError};
use crate::resource::{Attrs, Live};

type Found = Result<BTreeMap<Address, Live>, ProviderError>;

fn ecr_tags(addr: &Address, attrs: &Attrs) -> Result<Vec<Tag>, ProviderError> {
    super::tags::desired(attrs)
        .into_iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| invalid(addr, format!("bad tag: {e}")))
        })
        .collect()
}

/// One DescribeRepositories call (paginated) for all of them, then the tags
/// of each found repository.
pub async fn read_repositories(aws: &Aws, items: &[(Address, Live)]) -> Found {
    let at = batch_addr(items);
    let wanted: Vec<&str> = items.iter().map(|(_, l)| l.id.as_str()).collect();
    let mut found = BTreeMap::new();
    let mut token = None;
    loop {
        let page = aws
            .ecr
            .describe_repositories()
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| sdk_error(&at, "DescribeRepositories", &e))?;
        for r in page.repositories() {
            let Some(name) = r.repository_name().filter(|n| wanted.contains(n)) else {
                continue;
            };
            let tags = match r.repository_arn() {
                Some(arn) => {
                    let t = aws
                        .ecr
                        .list_tags_for_resource()
                        .resource_arn(arn)
                        .send()
                        .await
                        .map_err(|e| sdk_error(&at, "ListTagsForResource", &e))?;
                    super::tags::to_value(t.tags().iter().map(|t| (t.key(), t.value())))
                }
                None => json!({}),
            };
            let l = live(
                name,
                [
                    ("id", json!(name)),
                    ("name", json!(name)),
                    ("arn", json!(r.repository_arn())),
                    ("registry_id", json!(r.registry_id())),
                    ("repository_url", json!(r.repository_uri())),
                    (
                        "image_tag_mutability",
                        json!(r.image_tag_mutability().map(|m| m.as_str())),
                    ),
                    (
                        "scan_on_push",
                        json!(
                            r.image_scanning_configuration()
                                .map(|c| c.scan_on_push())
                                .unwrap_or(false)
                        ),
                    ),
                    (
                        "encryption_type",
                        json!(
                            r.encryption_configuration()
                                .map_or("AES256", |e| e.encryption_type().as_str())
                        ),
                    ),
                    ("tags", tags),
                ],
            );
            for (a, prior) in items {
                if prior.id == name {
                    found.insert(a.clone(), l.clone());
                }
            }
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    Ok(found)
}

async fn read_one(aws: &Aws, addr: &Address, name: &str) -> Result<Live, ProviderError> {
    let items = [(
        addr.clone(),
        Live {
            id: name.to_string(),
            attrs: Attrs::new(),
        },
    )];
    read_repositories(aws, &items)
        .await?
        .remove(addr)
        .ok_or_else(|| {
            ProviderError::new(
                addr,
                "RepositoryNotFoundException",
                format!("repository `{name}` cannot be read back"),
                true,
            )
        })
}

pub async fn create_repository(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let name = s(addr, desired, "name")?;
    let encryption = EncryptionConfiguration::builder()
        .encryption_type(EncryptionType::from(
            s_opt(desired, "encryption_type").unwrap_or("AES256"),
        ))
        .build()
        .map_err(|e| invalid(addr, format!("encryption: {e}")))?;
    let created = aws
        .ecr
        .create_repository()
        .repository_name(name)
        .image_tag_mutability(ImageTagMutability::from(
            s_opt(desired, "image_tag_mutability").unwrap_or("IMMUTABLE"),
        ))
        .image_scanning_configuration(
            ImageScanningConfiguration::builder()
                .scan_on_push(b(desired, "scan_on_push").unwrap_or(true))
                .build(),
        )
        .encryption_configuration(encryption)
        .set_tags(Some(ecr_tags(addr, desired)?))
        .send()
        .await;
    match created {
        Ok(_) => read_one(aws, addr, name).await,
        Err(e) if code_of(&e) == Some("RepositoryAlreadyExistsException") => {
            let prior = read_one(aws, addr, name).await?;
            let owned = prior
                .attrs
                .get("tags")
                .and_then(Value::as_object)
                .is_some_and(|t| {
                    t.get(STACK_TAG).and_then(Value::as_str) == Some(aws.stack.as_str())
                        && t.get(ADDRESS_TAG).and_then(Value::as_str)
                            == Some(addr.to_string().as_str())
                });
            if !owned {
                return Err(ProviderError::new(
                    addr,
                    "RepositoryAlreadyExistsException",
                    format!(
                        "ECR repository `{name}` already exists and is not tagged as this stack's; adopt it with `slipway import {addr} {name}`, rename `[registry] repository`, or delete it"
                    ),
                    false,
                ));
            }
            update_repository(aws, addr, &prior, desired, ctx).await
        }
        Err(e) => Err(sdk_error(addr, "CreateRepository", &e)),
    }
}

pub async fn update_repository(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    desired: &Attrs,
    _ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let name = prior.id.as_str();
    if let Some(m) = s_opt(desired, "image_tag_mutability")
        .filter(|m| s_opt(&prior.attrs, "image_tag_mutability") != Some(*m))
    {
        aws.ecr
            .put_image_tag_mutability()
            .repository_name(name)
            .image_tag_mutability(ImageTagMutability::from(m))
            .send()
            .await
            .map_err(|e| sdk_error(addr, "PutImageTagMutability", &e))?;
    }
    if let Some(scan) =
        b(desired, "scan_on_push").filter(|v| b(&prior.attrs, "scan_on_push") != Some(*v))
    {
        aws.ecr
            .put_image_scanning_configuration()
            .repository_name(name)
            .image_scanning_configuration(
                ImageScanningConfiguration::builder()
                    .scan_on_push(scan)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error(addr, "PutImageScanningConfiguration", &e))?;
    }
    if let (Some(change), Some(arn)) = (
        super::tags::change(prior.attrs.get("tags"), desired),
        s_opt(&prior.attrs, "arn"),
    ) {
        if !change.remove.is_empty() {
            aws.ecr
                .untag_resource()
                .resource_arn(arn)
                .set_tag_keys(Some(change.remove))
                .send()
                .await
                .map_err(|e| sdk_error(addr, "UntagResource", &e))?;
        }
        if !change.want.is_empty() {
            aws.ecr
                .tag_resource()
                .resource_arn(arn)
                .set_tags(Some(ecr_tags(addr, desired)?))
                .send()
                .await
                .map_err(|e| sdk_error(addr, "TagResource", &e))?;
        }
    }
    read_one(aws, addr, name).await
}

pub async fn read_lifecycle_policies(aws: &Aws, items: &[(Address, Live)]) -> Found {
    let mut found = BTreeMap::new();
    for (a, prior) in items {
        match aws
            .ecr
            .get_lifecycle_policy()
            .repository_name(&prior.id)
            .send()
            .await
        {
            Ok(out) => {
                let text = out.lifecycle_policy_text().unwrap_or("{}");
                let doc: Value =
                    serde_json::from_str(text).unwrap_or(Value::String(text.to_string()));
                // ECR may add defaults; keep the prior's spelling when it means the same.
                let doc = match prior.attrs.get("policy") {
                    Some(p) if same_lifecycle(p, &doc) => p.clone(),
                    _ => doc,
                };
                found.insert(
                    a.clone(),
                    live(
                        &prior.id,
                        [
                            ("id", json!(prior.id)),
                            ("repository", json!(prior.id)),
                            ("policy", doc),
                        ],
                    ),
                );
            }
            Err(e)
                if matches!(
                    code_of(&e),
                    Some("LifecyclePolicyNotFoundException" | "RepositoryNotFoundException")
                ) => {}
            Err(e) => return Err(sdk_error(a, "GetLifecyclePolicy", &e)),
        }
    }
    Ok(found)
}

/// Lifecycle rules compared without the optional fields ECR fills in.
fn same_lifecycle(a: &Value, b: &Value) -> bool {
    fn norm(v: &Value) -> Value {
        let mut v = v.clone();
        if let Some(rules) = v.get_mut("rules").and_then(Value::as_array_mut) {
            for r in rules {
                if let Some(sel) = r.get_mut("selection").and_then(Value::as_object_mut)
                    && sel.get("countUnit").is_some_and(Value::is_null)
                {
                    sel.remove("countUnit");
                }
                if let Some(obj) = r.as_object_mut()
                    && obj.get("description").is_some_and(|d| d == "")
                {
                    obj.remove("description");
                }
            }
        }
        v
    }
    norm(a) == norm(b)
}

pub async fn put_lifecycle_policy(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    _ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let repo = s(addr, desired, "repository")?;
    let text = match desired.get("policy") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => return Err(invalid(addr, "attribute `policy` is missing")),
    };
    aws.ecr
        .put_lifecycle_policy()
        .repository_name(repo)
        .lifecycle_policy_text(text)
        .send()
        .await
        .map_err(|e| sdk_error(addr, "PutLifecyclePolicy", &e))?;
    let prior = Live {
        id: repo.to_string(),
        attrs: desired.clone(),
    };
    read_lifecycle_policies(aws, &[(addr.clone(), prior)])
        .await?
        .remove(addr)
        .ok_or_else(|| {
            ProviderError::new(
                addr,
                "LifecyclePolicyNotFoundException",
                "the policy just put cannot be read back",
                true,
            )
        })
}

/// Deleting the repository deletes its images too: `destroy` means it.
pub async fn delete(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    ctx: &OpContext<'_>,
) -> Result<(), ProviderError> {
    if addr.kind() == "ecr_repository" {
        // Images go with their repository only when the run says so
        // (`--allow-protected`); otherwise ECR refuses a repository that
        // still has images, and slipway says what to do.
        let deleted = aws
            .ecr
            .delete_repository()
            .repository_name(&prior.id)
            .force(ctx.allows_data_loss())
            .send()
            .await;
        if let Err(e) = &deleted
            && e.as_service_error()
                .is_some_and(|s| s.is_repository_not_empty_exception())
        {
            return Err(ProviderError::new(
                addr,
                "RepositoryNotEmptyException",
                format!(
                    "ECR repository `{}` still holds images, and slipway does not delete images unasked; copy what you need, then run again with `--allow-protected` to delete the repository with its images",
                    prior.id
                ),
                false,
            ));
        }
        absent_ok(addr, "DeleteRepository", deleted)?;
    } else {
        absent_ok(
            addr,
            "DeleteLifecyclePolicy",
            aws.ecr
                .delete_lifecycle_policy()
                .repository_name(&prior.id)
                .send()
                .await,
        )?;
    }
    Ok(())
}
