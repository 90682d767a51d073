//! The AWS provider: network, security groups, IAM, ECR and the Jenkins
//! instances, through the official aws-sdk-rust crates. SDK types never leave
//! this module.
//!
//! Every object carries the tags `slipway:stack` and `slipway:address`; before
//! creating, the provider looks for an object with those tags (left by a run
//! that died between the create call and the state write) and adopts it.
//! Reads are batched per kind with filters, so a missing object is simply
//! absent from the answer rather than failing the whole call.

mod ecr;
mod eks;
pub mod elbv2;
mod error;
mod iam;
mod images;
mod instance;
mod inventory;
mod network;
pub mod object_store;
mod policy;
mod security;
mod tags;
pub mod thumbprint;
mod volume;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_credential_types::provider::ProvideCredentials;
use serde_json::Value;

use super::{DiscoverScope, Discovery, OpContext, Provider, ProviderError};
use crate::addr::Address;
use crate::resource::{Attrs, Live};
pub use error::AwsSetupError;
use error::not_supported;
pub use images::{DeployAws, Image, Retag, TargetHealth};

/// The kinds this provider manages.
pub const KINDS: &[&str] = &[
    "aws.vpc",
    "aws.internet_gateway",
    "aws.subnet",
    "aws.eip",
    "aws.eip_association",
    "aws.nat_gateway",
    "aws.route_table",
    "aws.route",
    "aws.route_table_association",
    "aws.security_group",
    "aws.security_group_rule",
    "aws.iam_role",
    "aws.iam_role_policy_attachment",
    "aws.iam_role_policy",
    "aws.iam_instance_profile",
    "aws.iam_policy",
    "aws.instance",
    "aws.ebs_volume",
    "aws.volume_attachment",
    "aws.ecr_repository",
    "aws.ecr_lifecycle_policy",
    "aws.eks_cluster",
    "aws.eks_fargate_profile",
    "aws.eks_access_entry",
    "aws.iam_openid_connect_provider",
];

/// How long to wait for each kind to become ready or gone, at most.
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub nat_gateway: Duration,
    pub instance: Duration,
    pub eks_cluster: Duration,
    /// A Fargate profile change, including waiting for other changes on the
    /// same cluster to finish.
    pub eks_profile: Duration,
    /// Retrying a call that failed because AWS has not caught up yet (an
    /// instance profile EC2 cannot see, a VPC with dependencies still going).
    pub consistency: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            nat_gateway: Duration::from_secs(10 * 60),
            instance: Duration::from_secs(10 * 60),
            eks_cluster: Duration::from_secs(30 * 60),
            eks_profile: Duration::from_secs(20 * 60),
            consistency: Duration::from_secs(3 * 60),
        }
    }
}

/// Clients and identity for one stack in one region.
#[derive(Clone)]
pub struct Aws {
    stack: String,
    ec2: aws_sdk_ec2::Client,
    iam: aws_sdk_iam::Client,
    ecr: aws_sdk_ecr::Client,
    eks: aws_sdk_eks::Client,
    elbv2: aws_sdk_elasticloadbalancingv2::Client,
    ssm: aws_sdk_ssm::Client,
    timeouts: Timeouts,
    /// How often to poll while waiting.
    poll: Duration,
    /// Who slipway runs as (recorded as an EKS cluster's creator).
    identity: Identity,
}

/// The account and ARN slipway runs as, as STS names them.
#[derive(Debug)]
pub struct Caller {
    pub account: String,
    pub arn: String,
}

/// The answer to the one GetCallerIdentity of a run. The call starts when
/// the provider connects and goes beside the run's first reads instead of
/// before them (one round trip less); whoever needs the answer waits for
/// it, and a run reports a failed check ahead of anything its reads said
/// (see [`AwsProvider::identity`]).
#[derive(Clone)]
struct Identity(
    futures::future::Shared<
        futures::future::BoxFuture<'static, Result<std::sync::Arc<Caller>, AwsSetupError>>,
    >,
);

impl Identity {
    fn check(config: &aws_types::SdkConfig) -> Self {
        use futures::FutureExt as _;
        let sts = aws_sdk_sts::Client::new(config);
        let endpoint = config
            .endpoint_url()
            .unwrap_or("the default AWS endpoints")
            .to_string();
        let call = tokio::spawn(async move {
            let me = sts.get_caller_identity().send().await.map_err(|e| {
                use aws_sdk_sts::error::ProvideErrorMetadata as _;
                // What STS said, as it said it; the whole chain only when
                // it said nothing (no connection, a timeout).
                let detail = match e
                    .as_service_error()
                    .and_then(|se| se.code().map(|c| (c, se.message())))
                {
                    Some((code, message)) => {
                        format!("{code}: {}", message.unwrap_or("(no message)"))
                    }
                    None => aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
                };
                AwsSetupError::Identity {
                    endpoint: endpoint.clone(),
                    detail,
                }
            })?;
            Ok(std::sync::Arc::new(Caller {
                account: me.account().unwrap_or_default().to_string(),
                arn: me.arn().unwrap_or_default().to_string(),
            }))
        });
        Identity(
            call.map(|joined| {
                joined.unwrap_or_else(|e| {
                    Err(AwsSetupError::Identity {
                        endpoint: "STS".to_string(),
                        detail: format!("the identity check stopped: {e}"),
                    })
                })
            })
            .boxed()
            .shared(),
        )
    }

    async fn get(&self) -> Result<std::sync::Arc<Caller>, AwsSetupError> {
        self.0.clone().await
    }

    /// `work` (a run's first calls) beside the identity check. A refusal is
    /// the error whatever `work` says — with rejected credentials its calls
    /// fail too, less clearly — and it stops `work` at once (a connection
    /// being refused may retry for a while).
    async fn gate<T, E: From<AwsSetupError>>(
        &self,
        work: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<(std::sync::Arc<Caller>, T), E> {
        let mut work = std::pin::pin!(work);
        let identity = std::pin::pin!(self.get());
        tokio::select! {
            me = identity => {
                let me = me?;
                Ok((me, work.await?))
            }
            out = &mut work => {
                let me = self.get().await?;
                Ok((me, out?))
            }
        }
    }
}

/// The AWS provider.
#[derive(Clone)]
pub struct AwsProvider {
    aws: Aws,
    config: aws_types::SdkConfig,
}

impl AwsProvider {
    /// Loads the standard credential chain and region configuration
    /// (environment, profiles, SSO, web identity, instance profile), honours
    /// `AWS_ENDPOINT_URL` and its per-service variants, and checks that
    /// credentials exist. Whether AWS accepts them is asked of STS at once,
    /// without waiting for the answer: [`Self::identity`] has it.
    pub async fn connect(stack: &str, region: &str) -> Result<Self, AwsSetupError> {
        // Adaptive mode: exponential backoff with jitter on throttling and
        // 5xx answers, plus a client-side rate limiter that every call to a
        // service shares (one client per service) and that slows down when
        // AWS throttles.
        let retry = RetryConfig::adaptive()
            .with_max_attempts(8)
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(20));
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .retry_config(retry)
            .load()
            .await;
        let Some(creds) = config.credentials_provider() else {
            return Err(AwsSetupError::NoCredentials {
                detail: "no credential provider is configured".into(),
            });
        };
        if let Err(e) = creds.provide_credentials().await {
            let detail = match e {
                aws_credential_types::provider::error::CredentialsError::CredentialsNotLoaded(_) => {
                    "looked in the environment, the shared config and credentials files, web identity, ECS and instance metadata".to_string()
                }
                other => aws_smithy_types::error::display::DisplayErrorContext(&other).to_string(),
            };
            return Err(AwsSetupError::NoCredentials { detail });
        }
        let poll = if config.endpoint_url().is_some() {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(5)
        };
        Ok(AwsProvider {
            config: config.clone(),
            aws: Aws {
                stack: stack.to_string(),
                ec2: aws_sdk_ec2::Client::new(&config),
                iam: aws_sdk_iam::Client::new(&config),
                ecr: aws_sdk_ecr::Client::new(&config),
                eks: aws_sdk_eks::Client::new(&config),
                elbv2: aws_sdk_elasticloadbalancingv2::Client::new(&config),
                ssm: aws_sdk_ssm::Client::new(&config),
                timeouts: Timeouts::default(),
                poll,
                identity: Identity::check(&config),
            },
        })
    }

    /// Who slipway runs as, once STS has said; the error when STS refused
    /// the credentials (or could not be reached). A run puts this ahead of
    /// whatever else failed: with rejected credentials every read fails
    /// too, and this is the error that says why.
    pub async fn identity(&self) -> Result<std::sync::Arc<Caller>, AwsSetupError> {
        self.aws.identity.get().await
    }

    /// `work` beside the identity check, which it yields to (see
    /// `Identity::gate`); and who slipway runs as.
    pub async fn gated<T, E: From<AwsSetupError>>(
        &self,
        work: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<(std::sync::Arc<Caller>, T), E> {
        self.aws.identity.gate(work).await
    }

    /// The loaded AWS configuration (credentials, region, endpoints), for
    /// the Kubernetes provider's EKS connection.
    pub fn sdk_config(&self) -> &aws_types::SdkConfig {
        &self.config
    }

    /// ECR images and load balancer target health, for the deploy stage.
    /// What the load balancer controller made for these Ingresses and
    /// Services (`namespace/name`, or an IngressGroup's name) in `cluster`
    /// that still exists.
    pub async fn controller_objects(
        &self,
        cluster: &str,
        stacks: &BTreeSet<String>,
    ) -> Result<elbv2::Leftovers, ProviderError> {
        let probe = Address::domain_wide(crate::addr::Domain::Aws);
        elbv2::made_for(
            &self.aws,
            &probe,
            elbv2::Scope {
                cluster,
                stacks: Some(stacks),
            },
        )
        .await
    }

    /// Removes what [`Self::controller_objects`] finds, as the controller
    /// would have.
    pub async fn remove_controller_objects(
        &self,
        cluster: &str,
        stacks: &BTreeSet<String>,
        ctx: &OpContext<'_>,
    ) -> Result<elbv2::Leftovers, ProviderError> {
        let probe = Address::domain_wide(crate::addr::Domain::Aws);
        elbv2::remove_made_for(
            &self.aws,
            &probe,
            elbv2::Scope {
                cluster,
                stacks: Some(stacks),
            },
            ctx,
        )
        .await
    }

    /// Deletes every load balancer and target group the controller made
    /// for `cluster` (tagged `elbv2.k8s.aws/cluster`), as the cluster's
    /// delete does first.
    pub async fn sweep_controller_load_balancers(
        &self,
        cluster: &str,
        ctx: &OpContext<'_>,
    ) -> Result<elbv2::Leftovers, ProviderError> {
        let probe = Address::domain_wide(crate::addr::Domain::Aws);
        elbv2::sweep_load_balancers(&self.aws, &probe, cluster, ctx).await
    }

    pub fn deploy_clients(&self) -> DeployAws {
        let region = self
            .config
            .region()
            .map_or(String::new(), |r| r.to_string());
        DeployAws::new(&self.config, &region, self.aws.identity.clone())
    }

    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.aws.timeouts = timeouts;
        self
    }

    pub fn supports(kind_key: &str) -> bool {
        KINDS.contains(&kind_key)
    }
}

impl Aws {
    /// Polls `check` until it returns `Some`, reporting how long it has waited.
    async fn wait_until<T, F, Fut>(
        &self,
        addr: &Address,
        ctx: &OpContext<'_>,
        what: &str,
        timeout: Duration,
        mut check: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, ProviderError>>,
    {
        self.wait_reporting(addr, ctx, what, timeout, || {
            let polled = check();
            async move { polled.await.map(|found| found.ok_or(None)) }
        })
        .await
    }

    /// Polls `check` until it returns `Ok`; an `Err` carries what to report
    /// meanwhile (a status, an estimate), `None` for how long it has waited.
    async fn wait_reporting<T, F, Fut>(
        &self,
        addr: &Address,
        ctx: &OpContext<'_>,
        what: &str,
        timeout: Duration,
        mut check: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Result<T, Option<String>>, ProviderError>>,
    {
        let started = tokio::time::Instant::now();
        loop {
            let note = match check().await? {
                Ok(v) => return Ok(v),
                Err(note) => note,
            };
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(ProviderError::new(
                    addr,
                    "WaiterTimeout",
                    format!(
                        "still not {what} after {}s; the operation may still complete — run again to pick it up",
                        timeout.as_secs()
                    ),
                    true,
                ));
            }
            ctx.status(&note.unwrap_or_else(|| {
                format!(
                    "waiting until {what} ({}s of at most {}s)",
                    waited.as_secs(),
                    timeout.as_secs()
                )
            }));
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Retries `call` while it fails with one of `codes` (AWS has not caught
    /// up with an earlier change yet), with exponential backoff, for at most
    /// the consistency timeout.
    async fn retry_consistency<T, F, Fut>(
        &self,
        ctx: &OpContext<'_>,
        codes: &[&str],
        mut call: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let started = tokio::time::Instant::now();
        let mut delay = self.poll.max(Duration::from_millis(100));
        loop {
            match call().await {
                Err(e)
                    if codes.iter().any(|c| e.code == *c)
                        && started.elapsed() < self.timeouts.consistency =>
                {
                    ctx.status(&format!("{}: waiting for AWS to catch up", e.code));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                other => return other,
            }
        }
    }
}

/// Calls made at once by a read of one kind whose API has no batch form
/// (one `Describe…` per object): enough that a stack's objects of a kind
/// take one round trip, few enough to stay inside AWS's request rates.
const READS_IN_FLIGHT: usize = 16;

/// Reads every item with `read`, up to [`READS_IN_FLIGHT`] at once, keeping
/// the first error: the objects of a kind are independent of each other.
async fn read_each<'a, F, Fut>(
    items: &'a [(Address, Live)],
    read: F,
) -> Result<BTreeMap<Address, Live>, ProviderError>
where
    F: Fn(&'a Address, &'a Live) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Live>, ProviderError>> + 'a,
{
    use futures::StreamExt as _;
    let mut pending = Vec::with_capacity(items.len());
    for (a, prior) in items {
        pending.push(read(a, prior));
    }
    let mut reads = futures::stream::iter(pending).buffered(READS_IN_FLIGHT);
    let mut out = BTreeMap::new();
    let mut addrs = items.iter().map(|(a, _)| a);
    while let Some(r) = reads.next().await {
        let a = addrs.next();
        if let (Some(l), Some(a)) = (r?, a) {
            out.insert(a.clone(), l);
        }
    }
    Ok(out)
}

/// The address a batched call's errors are reported against.
fn batch_addr(items: &[(Address, Live)]) -> Address {
    items
        .first()
        .map(|(a, _)| a.clone())
        .unwrap_or_else(|| Address::domain_wide(crate::addr::Domain::Aws))
}

/// A string attribute of the desired object.
fn s<'a>(addr: &Address, attrs: &'a Attrs, key: &str) -> Result<&'a str, ProviderError> {
    attrs.get(key).and_then(Value::as_str).ok_or_else(|| {
        ProviderError::new(
            addr,
            "InvalidDesiredState",
            format!("attribute `{key}` is missing or not a string"),
            false,
        )
    })
}

fn s_opt<'a>(attrs: &'a Attrs, key: &str) -> Option<&'a str> {
    attrs.get(key).and_then(Value::as_str)
}

fn b(attrs: &Attrs, key: &str) -> Option<bool> {
    attrs.get(key).and_then(Value::as_bool)
}

fn i(attrs: &Attrs, key: &str) -> Option<i64> {
    attrs.get(key).and_then(Value::as_i64)
}

fn strings(attrs: &Attrs, key: &str) -> Vec<String> {
    attrs
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Builds the attributes of a live object: the values read, keyed as in the stack.
fn live(id: &str, attrs: impl IntoIterator<Item = (&'static str, Value)>) -> Live {
    Live {
        id: id.to_string(),
        attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

/// Each item's answer from its kind's read: what was found (absent: gone),
/// or the read's error reported against every item.
fn answers(
    items: &[(Address, Live)],
    result: Result<BTreeMap<Address, Live>, ProviderError>,
) -> Vec<(Address, Result<Option<Live>, ProviderError>)> {
    match result {
        Ok(found) => items
            .iter()
            .map(|(a, _)| (a.clone(), Ok(found.get(a).cloned())))
            .collect(),
        Err(e) => items
            .iter()
            .map(|(a, _)| {
                (
                    a.clone(),
                    Err(ProviderError {
                        addr: a.clone(),
                        ..e.clone()
                    }),
                )
            })
            .collect(),
    }
}

#[async_trait]
impl Provider for AwsProvider {
    async fn read(&self, addr: &Address, prior: &Live) -> Result<Option<Live>, ProviderError> {
        let items = [(addr.clone(), prior.clone())];
        let mut out = self.read_many(&items).await;
        out.pop().map(|(_, r)| r).unwrap_or(Ok(None))
    }

    async fn read_many(
        &self,
        items: &[(Address, Live)],
    ) -> Vec<(Address, Result<Option<Live>, ProviderError>)> {
        let mut by_kind: BTreeMap<String, Vec<(Address, Live)>> = BTreeMap::new();
        for (a, l) in items {
            by_kind
                .entry(a.kind().to_string())
                .or_default()
                .push((a.clone(), l.clone()));
        }
        let aws = &self.aws;
        let mut take = |kind: &str| by_kind.remove(kind).unwrap_or_default();
        // Kinds read from one answer: route tables, routes and associations
        // from one DescribeRouteTables; Elastic IPs and their associations
        // from one DescribeAddresses; volumes and their attachments from one
        // DescribeVolumes; whether an access entry's cluster is being
        // deleted from the cluster's own read.
        let (tables, routes, associations) = (
            take("route_table"),
            take("route"),
            take("route_table_association"),
        );
        let (eips, eip_associations) = (take("eip"), take("eip_association"));
        let (clusters, entries) = (take("eks_cluster"), take("eks_access_entry"));
        let (volumes, attachments) = (take("ebs_volume"), take("volume_attachment"));
        let families = async {
            let (route_family, address_family, eks_family, volume_family) = futures::join!(
                network::read_route_family(aws, &tables, &routes, &associations),
                network::read_address_family(aws, &eips, &eip_associations),
                eks::read_clusters_and_entries(aws, &clusters, &entries),
                volume::read_volume_family(aws, &volumes, &attachments),
            );
            let (t, r, a) = route_family;
            let (e, ea) = address_family;
            let (c, ce) = eks_family;
            let (v, va) = volume_family;
            [
                answers(&tables, t),
                answers(&routes, r),
                answers(&associations, a),
                answers(&eips, e),
                answers(&eip_associations, ea),
                answers(&clusters, c),
                answers(&entries, ce),
                answers(&volumes, v),
                answers(&attachments, va),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
        };
        // Kinds whose read needs a second round (a VPC's DNS attributes, an
        // instance's volumes and attributes, a repository's tags, a policy's
        // document) are asked first, so that AWS, answering many calls at
        // once, answers theirs early and the second round overlaps the rest.
        let mut by_kind: Vec<_> = by_kind.into_iter().collect();
        by_kind.sort_by_key(|(kind, _)| {
            !matches!(
                kind.as_str(),
                "instance" | "vpc" | "ecr_repository" | "iam_policy"
            )
        });
        let reads = by_kind.into_iter().map(|(kind, items)| async move {
            let result = match kind.as_str() {
                "vpc" => network::read_vpcs(aws, &items).await,
                "internet_gateway" => network::read_igws(aws, &items).await,
                "subnet" => network::read_subnets(aws, &items).await,
                "nat_gateway" => network::read_nats(aws, &items).await,
                "security_group" => security::read_groups(aws, &items).await,
                "security_group_rule" => security::read_rules(aws, &items).await,
                "instance" => instance::read(aws, &items).await,
                "ecr_repository" => ecr::read_repositories(aws, &items).await,
                "ecr_lifecycle_policy" => ecr::read_lifecycle_policies(aws, &items).await,
                "eks_fargate_profile" => eks::read_profiles(aws, &items).await,
                "iam_openid_connect_provider" => eks::read_oidc(aws, &items).await,
                "iam_role"
                | "iam_role_policy_attachment"
                | "iam_role_policy"
                | "iam_instance_profile"
                | "iam_policy" => iam::read(aws, &kind, &items).await,
                _ => Err(not_supported(&items[0].0)),
            };
            answers(&items, result)
        });
        let (mut out, rest) = futures::join!(families, futures::future::join_all(reads));
        out.extend(rest.into_iter().flatten());
        out
    }

    async fn discover(&self, scope: &DiscoverScope<'_>) -> Result<Discovery, ProviderError> {
        let tagged = tags::discover_ec2(&self.aws, scope.stack, scope.known);
        if !scope.thorough {
            return Ok(Discovery {
                tagged: tagged.await?,
                ..Discovery::default()
            });
        }
        let (tagged, rest) = futures::join!(tagged, inventory::discover(&self.aws, scope));
        let mut errors = Vec::new();
        let tagged = inventory::ok_or_note(tagged, &mut errors);
        let mut rest = inventory::ok_or_note(rest, &mut errors);
        if let Some(e) = inventory::combined(errors) {
            return Err(e);
        }
        rest.tagged.extend(tagged);
        Ok(rest)
    }

    async fn create(
        &self,
        addr: &Address,
        desired: &Attrs,
        ctx: &OpContext<'_>,
    ) -> Result<Live, ProviderError> {
        let aws = &self.aws;
        match addr.kind() {
            "vpc" => network::create_vpc(aws, addr, desired, ctx).await,
            "internet_gateway" => network::create_igw(aws, addr, desired, ctx).await,
            "subnet" => network::create_subnet(aws, addr, desired, ctx).await,
            "eip" => network::create_eip(aws, addr, desired, ctx).await,
            "eip_association" => network::create_eip_association(aws, addr, desired, ctx).await,
            "nat_gateway" => network::create_nat(aws, addr, desired, ctx).await,
            "route_table" => network::create_route_table(aws, addr, desired, ctx).await,
            "route" => network::create_route(aws, addr, desired, ctx).await,
            "route_table_association" => network::create_association(aws, addr, desired, ctx).await,
            "security_group" => security::create_group(aws, addr, desired, ctx).await,
            "security_group_rule" => security::create_rule(aws, addr, desired, ctx).await,
            "instance" => instance::create(aws, addr, desired, ctx).await,
            "ebs_volume" => volume::create_volume(aws, addr, desired, ctx).await,
            "volume_attachment" => volume::create_attachment(aws, addr, desired, ctx).await,
            "ecr_repository" => ecr::create_repository(aws, addr, desired, ctx).await,
            "ecr_lifecycle_policy" => ecr::put_lifecycle_policy(aws, addr, desired, ctx).await,
            "eks_cluster" => eks::create_cluster(aws, addr, desired, ctx).await,
            "eks_fargate_profile" => eks::create_profile(aws, addr, desired, ctx).await,
            "eks_access_entry" => eks::create_entry(aws, addr, desired, ctx).await,
            "iam_openid_connect_provider" => eks::create_oidc(aws, addr, desired, ctx).await,
            k if k.starts_with("iam_") => iam::create(aws, addr, desired, ctx).await,
            _ => Err(not_supported(addr)),
        }
    }

    async fn update(
        &self,
        addr: &Address,
        prior: &Live,
        desired: &Attrs,
        ctx: &OpContext<'_>,
    ) -> Result<Live, ProviderError> {
        let aws = &self.aws;
        match addr.kind() {
            "vpc" => network::update_vpc(aws, addr, prior, desired, ctx).await,
            "internet_gateway" | "subnet" | "eip" | "nat_gateway" | "route_table" => {
                network::update_tagged(aws, addr, prior, desired, ctx).await
            }
            "route" => network::update_route(aws, addr, prior, desired, ctx).await,
            "route_table_association" => {
                network::update_association(aws, addr, prior, desired, ctx).await
            }
            "security_group" => security::update_group(aws, addr, prior, desired, ctx).await,
            "security_group_rule" => security::update_rule(aws, addr, prior, desired, ctx).await,
            "instance" => instance::update(aws, addr, prior, desired, ctx).await,
            "ebs_volume" => volume::update_volume(aws, addr, prior, desired, ctx).await,
            "ecr_repository" => ecr::update_repository(aws, addr, prior, desired, ctx).await,
            "ecr_lifecycle_policy" => ecr::put_lifecycle_policy(aws, addr, desired, ctx).await,
            "eks_cluster" => eks::update_cluster(aws, addr, prior, desired, ctx).await,
            "eks_access_entry" => eks::update_entry(aws, addr, prior, desired, ctx).await,
            "iam_openid_connect_provider" => eks::update_oidc(aws, addr, prior, desired, ctx).await,
            // Every attribute of a Fargate profile forces a new one; tags alone remain.
            "eks_fargate_profile" => eks::update_profile(aws, addr, prior, desired, ctx).await,
            k if k.starts_with("iam_") => iam::update(aws, addr, prior, desired, ctx).await,
            _ => Err(not_supported(addr)),
        }
    }

    async fn delete(
        &self,
        addr: &Address,
        prior: &Live,
        ctx: &OpContext<'_>,
    ) -> Result<(), ProviderError> {
        let aws = &self.aws;
        match addr.kind() {
            "vpc"
            | "internet_gateway"
            | "subnet"
            | "eip"
            | "nat_gateway"
            | "route_table"
            | "route"
            | "route_table_association" => network::delete(aws, addr, prior, ctx).await,
            "security_group" | "security_group_rule" => {
                security::delete(aws, addr, prior, ctx).await
            }
            "instance" => instance::delete(aws, addr, prior, ctx).await,
            "eip_association" => network::delete_eip_association(aws, addr, prior).await,
            "ebs_volume" => volume::delete_volume(aws, addr, prior, ctx).await,
            "volume_attachment" => volume::delete_attachment(aws, addr, prior, ctx).await,
            "ecr_repository" | "ecr_lifecycle_policy" => ecr::delete(aws, addr, prior, ctx).await,
            "eks_cluster"
            | "eks_fargate_profile"
            | "eks_access_entry"
            | "iam_openid_connect_provider" => eks::delete(aws, addr, prior, ctx).await,
            k if k.starts_with("iam_") => iam::delete(aws, addr, prior, ctx).await,
            _ => Err(not_supported(addr)),
        }
    }

    /// AWS's typical times (localaws's lifecycles use the same figures).
    fn expected_duration(&self, addr: &Address, deleting: bool) -> Duration {
        let secs = match (addr.kind(), deleting) {
            ("eks_cluster", false) => 600,
            ("eks_cluster", true) => 300,
            ("eks_fargate_profile", false) => 150,
            ("eks_fargate_profile", true) => 120,
            ("nat_gateway", false) => 90,
            ("nat_gateway", true) => 60,
            ("instance", _) => 30,
            _ => 1,
        };
        Duration::from_secs(secs)
    }
}
