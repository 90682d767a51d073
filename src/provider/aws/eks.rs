//! The EKS cluster, its Fargate profiles and access entries, and the
//! cluster's IAM OIDC provider.
//!
//! EKS allows one Fargate profile change at a time per cluster: the executor
//! runs profiles of one cluster one after another (their serial group), and
//! the `ResourceInUseException` EKS answers while another change — by another
//! run, or by the console — is in progress is retried here until it passes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_eks::types::{
    AuthenticationMode, ClusterStatus, CreateAccessConfigRequest, FargateProfileSelector,
    FargateProfileStatus, LogSetup, LogType, Logging, UpdateAccessConfigRequest, UpdateStatus,
    VpcConfigRequest,
};
use serde_json::{Value, json};

use super::error::{absent_ok, code_of, invalid, sdk_error};
use super::tags::{ADDRESS_TAG, STACK_TAG};
use super::{Aws, b, batch_addr, live, s, s_opt, strings};
use crate::addr::Address;
use crate::provider::{OpContext, ProviderError};
use crate::resource::{Attrs, Live};

type Found = Result<BTreeMap<Address, Live>, ProviderError>;

/// How long EKS takes, for the progress line's estimate.
const CLUSTER_EXPECTED: Duration = Duration::from_secs(10 * 60);
const PROFILE_EXPECTED: Duration = Duration::from_secs(3 * 60);

fn tag_map(attrs: &Attrs) -> HashMap<String, String> {
    super::tags::desired(attrs).into_iter().collect()
}

fn tags_value(tags: Option<&HashMap<String, String>>) -> Value {
    super::tags::to_value(
        tags.into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

fn owned(aws: &Aws, addr: &Address, tags: Option<&HashMap<String, String>>) -> bool {
    tags.is_some_and(|t| {
        t.get(STACK_TAG) == Some(&aws.stack) && t.get(ADDRESS_TAG) == Some(&addr.to_string())
    })
}

/// `id`: what `slipway import` takes to adopt it.
fn foreign(addr: &Address, what: &str, name: &str, id: &str) -> ProviderError {
    ProviderError::new(
        addr,
        "ResourceInUseException",
        format!(
            "EKS {what} `{name}` already exists and is not tagged as this resource of this stack; adopt it with `slipway import {addr} {id}`, rename it in the stack, or delete it"
        ),
        false,
    )
}

/// A list as the prior recorded it when it holds the same elements, so the
/// order AWS answers in never shows as a change.
fn same_set(read: Vec<String>, prior: Option<&Value>) -> Value {
    let prior_list: Option<Vec<String>> = prior.and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    });
    match prior_list {
        Some(p) => {
            let (mut a, mut b) = (p.clone(), read.clone());
            a.sort();
            b.sort();
            if a == b { json!(p) } else { json!(read) }
        }
        None => json!(read),
    }
}

fn eta(elapsed: Duration, expected: Duration) -> String {
    let left = expected.saturating_sub(elapsed).as_secs();
    if left == 0 {
        "any moment now".to_string()
    } else {
        format!("about {}m{:02}s left", left / 60, left % 60)
    }
}

// ---------------------------------------------------------------- cluster

fn cluster_live(c: &aws_sdk_eks::types::Cluster, prior: Option<&Attrs>) -> Live {
    let name = c.name().unwrap_or_default();
    let vpc = c.resources_vpc_config();
    let logs: Vec<String> = c
        .logging()
        .map(|l| l.cluster_logging())
        .unwrap_or_default()
        .iter()
        .filter(|s| s.enabled() == Some(true))
        .flat_map(|s| s.types().iter().map(|t| t.as_str().to_string()))
        .collect();
    let p = |k: &str| prior.and_then(|a| a.get(k));
    let mut l = live(
        name,
        [
            ("id", json!(name)),
            ("name", json!(name)),
            ("arn", json!(c.arn())),
            ("version", json!(c.version())),
            ("role_arn", json!(c.role_arn())),
            (
                "subnet_ids",
                same_set(
                    vpc.map(|v| v.subnet_ids().to_vec()).unwrap_or_default(),
                    p("subnet_ids"),
                ),
            ),
            (
                "endpoint_public_access",
                json!(vpc.map(|v| v.endpoint_public_access())),
            ),
            (
                "endpoint_private_access",
                json!(vpc.map(|v| v.endpoint_private_access())),
            ),
            (
                "public_access_cidrs",
                same_set(
                    vpc.map(|v| v.public_access_cidrs().to_vec())
                        .unwrap_or_default(),
                    p("public_access_cidrs"),
                ),
            ),
            (
                "cluster_security_group_id",
                json!(vpc.and_then(|v| v.cluster_security_group_id())),
            ),
            ("enabled_log_types", same_set(logs, p("enabled_log_types"))),
            (
                "authentication_mode",
                json!(
                    c.access_config()
                        .and_then(|a| a.authentication_mode())
                        .map(|m| m.as_str())
                ),
            ),
            ("endpoint", json!(c.endpoint())),
            (
                "certificate_authority",
                json!(c.certificate_authority().and_then(|ca| ca.data())),
            ),
            (
                "oidc_issuer",
                json!(c.identity().and_then(|i| i.oidc()).and_then(|o| o.issuer())),
            ),
            ("tags", tags_value(c.tags())),
        ],
    );
    // Known only from the create; kept from the state.
    if let Some(creator) = p("creator_arn") {
        l.attrs.insert("creator_arn".to_string(), creator.clone());
    }
    l
}

async fn describe_cluster(
    aws: &Aws,
    addr: &Address,
    name: &str,
) -> Result<Option<aws_sdk_eks::types::Cluster>, ProviderError> {
    Ok(absent_ok(
        addr,
        "DescribeCluster",
        aws.eks.describe_cluster().name(name).send().await,
    )?
    .and_then(|out| out.cluster().cloned()))
}

pub async fn read_clusters(aws: &Aws, items: &[(Address, Live)]) -> Found {
    super::read_each(items, |a, prior| async move {
        // A cluster being deleted is as good as gone.
        Ok(describe_cluster(aws, a, &prior.id)
            .await?
            .filter(|c| c.status() != Some(&ClusterStatus::Deleting))
            .map(|c| cluster_live(&c, Some(&prior.attrs))))
    })
    .await
}

fn logging(desired: &Attrs) -> Logging {
    let types: Vec<LogType> = strings(desired, "enabled_log_types")
        .iter()
        .map(|t| LogType::from(t.as_str()))
        .collect();
    let all = [
        LogType::Api,
        LogType::Audit,
        LogType::Authenticator,
        LogType::ControllerManager,
        LogType::Scheduler,
    ];
    let off: Vec<LogType> = all.into_iter().filter(|t| !types.contains(t)).collect();
    let mut l = Logging::builder();
    if !types.is_empty() {
        l = l.cluster_logging(
            LogSetup::builder()
                .set_types(Some(types))
                .enabled(true)
                .build(),
        );
    }
    if !off.is_empty() {
        l = l.cluster_logging(
            LogSetup::builder()
                .set_types(Some(off))
                .enabled(false)
                .build(),
        );
    }
    l.build()
}

async fn wait_cluster_active(
    aws: &Aws,
    addr: &Address,
    name: &str,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let started = tokio::time::Instant::now();
    aws.wait_reporting(addr, ctx, "ACTIVE", aws.timeouts.eks_cluster, || async {
        let Some(c) = describe_cluster(aws, addr, name).await? else {
            return Err(ProviderError::new(
                addr,
                "ResourceNotFoundException",
                format!("cluster `{name}` disappeared while being created"),
                true,
            ));
        };
        match c.status() {
            Some(ClusterStatus::Active) => Ok(Ok(cluster_live(&c, None))),
            Some(ClusterStatus::Failed) => Err(ProviderError::new(
                addr,
                "ClusterFailed",
                format!("cluster `{name}` failed to create; see its health in the EKS console"),
                false,
            )),
            Some(ClusterStatus::Deleting) => Err(ProviderError::new(
                addr,
                "ClusterDeleting",
                format!("cluster `{name}` is being deleted (outside this run); run again once it is gone"),
                true,
            )),
            other => Ok(Err(Some(format!(
                "{} ({})",
                other.map_or("CREATING", |s| s.as_str()),
                eta(started.elapsed(), CLUSTER_EXPECTED)
            )))),
        }
    })
    .await
}

/// Waits until DescribeCluster no longer finds the cluster.
async fn wait_cluster_gone(
    aws: &Aws,
    addr: &Address,
    name: &str,
    ctx: &OpContext<'_>,
) -> Result<(), ProviderError> {
    let started = tokio::time::Instant::now();
    aws.wait_reporting(addr, ctx, "deleted", aws.timeouts.eks_cluster, || async {
        if describe_cluster(aws, addr, name).await?.is_none() {
            return Ok(Ok(()));
        }
        Ok(Err(Some(format!(
            "DELETING ({})",
            eta(started.elapsed(), Duration::from_secs(5 * 60))
        ))))
    })
    .await
}

pub async fn create_cluster(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let name = s(addr, desired, "name")?;
    let vpc = VpcConfigRequest::builder()
        .set_subnet_ids(Some(strings(desired, "subnet_ids")))
        .set_endpoint_public_access(b(desired, "endpoint_public_access"))
        .set_endpoint_private_access(b(desired, "endpoint_private_access"))
        .set_public_access_cidrs(
            desired
                .get("public_access_cidrs")
                .map(|_| strings(desired, "public_access_cidrs")),
        )
        .build();
    let access = CreateAccessConfigRequest::builder()
        .authentication_mode(AuthenticationMode::from(
            s_opt(desired, "authentication_mode").unwrap_or("API_AND_CONFIG_MAP"),
        ))
        // The identity that creates the cluster (slipway's caller) gets
        // cluster-admin through an access entry, as on the console.
        .bootstrap_cluster_creator_admin_permissions(true)
        .build();
    let create = || {
        aws.retry_consistency(ctx, &["InvalidParameterException"], || async {
            aws.eks
                .create_cluster()
                .name(name)
                .set_version(s_opt(desired, "version").map(str::to_string))
                .role_arn(s(addr, desired, "role_arn")?)
                .resources_vpc_config(vpc.clone())
                .logging(logging(desired))
                .access_config(access.clone())
                .set_tags(Some(tag_map(desired)))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    let mut err = sdk_error(addr, "CreateCluster", &e);
                    // Only a role IAM has not propagated yet is worth waiting for.
                    if err.code == "InvalidParameterException" && !err.message.contains("assume") {
                        err.code = "InvalidParameter".to_string();
                    }
                    err
                })
        })
    };
    match create().await {
        Ok(()) => {}
        Err(e) if e.code == "ResourceInUseException" => {
            let existing = describe_cluster(aws, addr, name).await?;
            if !existing
                .as_ref()
                .is_some_and(|c| owned(aws, addr, c.tags()))
            {
                return Err(foreign(addr, "cluster", name, name));
            }
            // Ours but on its way out (deleted outside slipway, or by an
            // earlier run): a new one once the name is free.
            if existing.as_ref().and_then(|c| c.status()) == Some(&ClusterStatus::Deleting) {
                wait_cluster_gone(aws, addr, name, ctx).await?;
                create().await?;
            }
        }
        Err(e) => return Err(e),
    }
    wait_cluster_active(aws, addr, name, ctx).await?;
    // EKS gives the creator an access entry of its own; drift knows it by
    // this (EKS does not say who created a cluster).
    let mut attrs = desired.clone();
    // A run checks its identity before it changes anything, so this is
    // known; failing here would leave the new cluster out of the state, so
    // an unknown creator is left out instead (drift then falls back on the
    // identity it runs as).
    if let Ok(creator) = aws.identity.get().await {
        attrs.insert("creator_arn".to_string(), json!(creator.arn));
    }
    let prior = Live {
        id: name.to_string(),
        attrs,
    };
    read_clusters(aws, &[(addr.clone(), prior)])
        .await?
        .remove(addr)
        .ok_or_else(|| {
            ProviderError::new(
                addr,
                "ResourceNotFoundException",
                "the cluster cannot be read back",
                true,
            )
        })
}

/// Waits for one EKS update to finish.
async fn wait_update(
    aws: &Aws,
    addr: &Address,
    cluster: &str,
    update: Option<&aws_sdk_eks::types::Update>,
    ctx: &OpContext<'_>,
) -> Result<(), ProviderError> {
    let Some(id) = update.and_then(|u| u.id()) else {
        return Ok(());
    };
    aws.wait_until(
        addr,
        ctx,
        "the update is done",
        aws.timeouts.eks_cluster,
        || async {
            let out = aws
                .eks
                .describe_update()
                .name(cluster)
                .update_id(id)
                .send()
                .await
                .map_err(|e| sdk_error(addr, "DescribeUpdate", &e))?;
            let u = out.update();
            match u.and_then(|u| u.status()) {
                Some(UpdateStatus::Successful) => Ok(Some(())),
                Some(UpdateStatus::Failed | UpdateStatus::Cancelled) => {
                    let why: Vec<String> = u
                        .map(|u| u.errors())
                        .unwrap_or_default()
                        .iter()
                        .map(|e| e.error_message().unwrap_or("").to_string())
                        .collect();
                    Err(ProviderError::new(
                        addr,
                        "UpdateFailed",
                        format!("EKS update `{id}` failed: {}", why.join("; ")),
                        false,
                    ))
                }
                _ => Ok(None),
            }
        },
    )
    .await
}

/// EKS takes one kind of change per call, and one update at a time.
pub async fn update_cluster(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let name = prior.id.as_str();
    let differs = |k: &str| desired.get(k).is_some() && desired.get(k) != prior.attrs.get(k);
    if differs("version") {
        ctx.status("upgrading the Kubernetes version");
        let out = aws
            .eks
            .update_cluster_version()
            .name(name)
            .version(s(addr, desired, "version")?)
            .send()
            .await
            .map_err(|e| sdk_error(addr, "UpdateClusterVersion", &e))?;
        wait_update(aws, addr, name, out.update(), ctx).await?;
    }
    if differs("endpoint_public_access")
        || differs("endpoint_private_access")
        || differs("public_access_cidrs")
    {
        let vpc = VpcConfigRequest::builder()
            .set_endpoint_public_access(b(desired, "endpoint_public_access"))
            .set_endpoint_private_access(b(desired, "endpoint_private_access"))
            .set_public_access_cidrs(
                desired
                    .get("public_access_cidrs")
                    .map(|_| strings(desired, "public_access_cidrs")),
            )
            .build();
        let out = aws
            .eks
            .update_cluster_config()
            .name(name)
            .resources_vpc_config(vpc)
            .send()
            .await
            .map_err(|e| sdk_error(addr, "UpdateClusterConfig", &e))?;
        wait_update(aws, addr, name, out.update(), ctx).await?;
    }
    if differs("enabled_log_types") {
        let out = aws
            .eks
            .update_cluster_config()
            .name(name)
            .logging(logging(desired))
            .send()
            .await
            .map_err(|e| sdk_error(addr, "UpdateClusterConfig", &e))?;
        wait_update(aws, addr, name, out.update(), ctx).await?;
    }
    if differs("authentication_mode") {
        let mode = AuthenticationMode::from(s(addr, desired, "authentication_mode")?);
        let out = aws
            .eks
            .update_cluster_config()
            .name(name)
            .access_config(
                UpdateAccessConfigRequest::builder()
                    .authentication_mode(mode)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error(addr, "UpdateClusterConfig", &e))?;
        wait_update(aws, addr, name, out.update(), ctx).await?;
    }
    if let Some(arn) = s_opt(&prior.attrs, "arn") {
        sync_tags(aws, addr, arn, prior, desired).await?;
    }
    read_clusters(aws, &[(addr.clone(), prior.clone())])
        .await?
        .remove(addr)
        .ok_or_else(|| {
            ProviderError::new(
                addr,
                "ResourceNotFoundException",
                "the cluster cannot be read back",
                true,
            )
        })
}

async fn sync_tags(
    aws: &Aws,
    addr: &Address,
    arn: &str,
    prior: &Live,
    desired: &Attrs,
) -> Result<(), ProviderError> {
    let Some(change) = super::tags::change(prior.attrs.get("tags"), desired) else {
        return Ok(());
    };
    if !change.remove.is_empty() {
        aws.eks
            .untag_resource()
            .resource_arn(arn)
            .set_tag_keys(Some(change.remove))
            .send()
            .await
            .map_err(|e| sdk_error(addr, "UntagResource", &e))?;
    }
    if !change.want.is_empty() {
        aws.eks
            .tag_resource()
            .resource_arn(arn)
            .set_tags(Some(change.want.into_iter().collect()))
            .send()
            .await
            .map_err(|e| sdk_error(addr, "TagResource", &e))?;
    }
    Ok(())
}

// ---------------------------------------------------------------- Fargate profiles

fn profile_ids(id: &str) -> Option<(&str, &str)> {
    id.split_once('/')
}

fn profile_live(
    cluster: &str,
    p: &aws_sdk_eks::types::FargateProfile,
    prior: Option<&Attrs>,
) -> Live {
    let name = p.fargate_profile_name().unwrap_or_default();
    let id = format!("{cluster}/{name}");
    let selectors: Vec<Value> = p
        .selectors()
        .iter()
        .map(|s| {
            let mut m = serde_json::Map::new();
            if let Some(ns) = s.namespace() {
                m.insert("namespace".into(), json!(ns));
            }
            if let Some(l) = s.labels().filter(|l| !l.is_empty()) {
                m.insert("labels".into(), json!(l));
            }
            Value::Object(m)
        })
        .collect();
    live(
        &id,
        [
            ("id", json!(id)),
            ("arn", json!(p.fargate_profile_arn())),
            ("cluster_name", json!(cluster)),
            ("name", json!(name)),
            ("pod_execution_role_arn", json!(p.pod_execution_role_arn())),
            (
                "subnet_ids",
                same_set(
                    p.subnets().to_vec(),
                    prior.and_then(|a| a.get("subnet_ids")),
                ),
            ),
            ("selectors", json!(selectors)),
            ("tags", tags_value(p.tags())),
        ],
    )
}

async fn describe_profile(
    aws: &Aws,
    addr: &Address,
    cluster: &str,
    name: &str,
) -> Result<Option<aws_sdk_eks::types::FargateProfile>, ProviderError> {
    match aws
        .eks
        .describe_fargate_profile()
        .cluster_name(cluster)
        .fargate_profile_name(name)
        .send()
        .await
    {
        Ok(out) => Ok(out.fargate_profile().cloned()),
        Err(e) if code_of(&e) == Some("ResourceNotFoundException") => Ok(None),
        Err(e) => Err(sdk_error(addr, "DescribeFargateProfile", &e)),
    }
}

/// (A cluster with Fargate profiles cannot be deleted: EKS wants them gone
/// first, so profiles need no check of their cluster.)
pub async fn read_profiles(aws: &Aws, items: &[(Address, Live)]) -> Found {
    super::read_each(items, |a, prior| async move {
        let Some((cluster, name)) = profile_ids(&prior.id) else {
            return Ok(None);
        };
        Ok(describe_profile(aws, a, cluster, name)
            .await?
            .filter(|p| p.status() != Some(&FargateProfileStatus::Deleting))
            .map(|p| profile_live(cluster, &p, Some(&prior.attrs))))
    })
    .await
}

/// Retries a profile change while EKS is busy with another one on the cluster.
async fn while_busy<T, F, Fut>(
    aws: &Aws,
    addr: &Address,
    ctx: &OpContext<'_>,
    mut call: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    let started = tokio::time::Instant::now();
    loop {
        match call().await {
            Err(e)
                if e.code == "ResourceInUseException"
                    && !e.message.contains("already exists")
                    && started.elapsed() < aws.timeouts.eks_profile =>
            {
                ctx.status(
                    "EKS is changing another Fargate profile of this cluster; waiting for it",
                );
                tokio::time::sleep(aws.poll.max(Duration::from_millis(200))).await;
            }
            Err(e)
                if e.code == "ResourceInUseException" && !e.message.contains("already exists") =>
            {
                return Err(ProviderError {
                    addr: addr.clone(),
                    retryable: true,
                    ..e
                });
            }
            other => return other,
        }
    }
}

async fn wait_profile(
    aws: &Aws,
    addr: &Address,
    cluster: &str,
    name: &str,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let started = tokio::time::Instant::now();
    aws.wait_reporting(addr, ctx, "ACTIVE", aws.timeouts.eks_profile, || async {
        let Some(p) = describe_profile(aws, addr, cluster, name).await? else {
            return Err(ProviderError::new(
                addr,
                "ResourceNotFoundException",
                format!("Fargate profile `{name}` disappeared while being created"),
                true,
            ));
        };
        match p.status() {
            Some(FargateProfileStatus::Active) => Ok(Ok(profile_live(cluster, &p, None))),
            Some(FargateProfileStatus::CreateFailed) => Err(ProviderError::new(
                addr,
                "CreateFailed",
                format!(
                    "Fargate profile `{name}` failed: {}",
                    p.health()
                        .map(|h| h.issues())
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|i| i.message())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                false,
            )),
            other => Ok(Err(Some(format!(
                "{} ({})",
                other.map_or("CREATING", |s| s.as_str()),
                eta(started.elapsed(), PROFILE_EXPECTED)
            )))),
        }
    })
    .await
}

pub async fn create_profile(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let cluster = s(addr, desired, "cluster_name")?;
    let name = s(addr, desired, "name")?;
    let selectors: Vec<FargateProfileSelector> = desired
        .get("selectors")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|sel| {
                    let labels: Option<HashMap<String, String>> =
                        sel.get("labels").and_then(Value::as_object).map(|m| {
                            m.iter()
                                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                                .collect()
                        });
                    FargateProfileSelector::builder()
                        .set_namespace(
                            sel.get("namespace")
                                .and_then(Value::as_str)
                                .map(str::to_string),
                        )
                        .set_labels(labels)
                        .build()
                })
                .collect()
        })
        .ok_or_else(|| invalid(addr, "attribute `selectors` is missing"))?;
    let created = while_busy(aws, addr, ctx, || async {
        aws.eks
            .create_fargate_profile()
            .cluster_name(cluster)
            .fargate_profile_name(name)
            .pod_execution_role_arn(s(addr, desired, "pod_execution_role_arn")?)
            .set_subnets(Some(strings(desired, "subnet_ids")))
            .set_selectors(Some(selectors.clone()))
            .set_tags(Some(tag_map(desired)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error(addr, "CreateFargateProfile", &e))
    })
    .await;
    match created {
        Ok(()) => {}
        Err(e) if e.code == "ResourceInUseException" => {
            // "already exists": adopt it if it is ours.
            let existing = describe_profile(aws, addr, cluster, name).await?;
            if !existing
                .as_ref()
                .is_some_and(|p| owned(aws, addr, p.tags()))
            {
                return Err(foreign(
                    addr,
                    "Fargate profile",
                    name,
                    &format!("{cluster}/{name}"),
                ));
            }
        }
        Err(e) => return Err(e),
    }
    wait_profile(aws, addr, cluster, name, ctx).await
}

/// Only tags change in place.
pub async fn update_profile(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    desired: &Attrs,
    _ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    if let Some(arn) = s_opt(&prior.attrs, "arn") {
        sync_tags(aws, addr, arn, prior, desired).await?;
    }
    read_profiles(aws, &[(addr.clone(), prior.clone())])
        .await?
        .remove(addr)
        .ok_or_else(|| {
            ProviderError::new(
                addr,
                "ResourceNotFoundException",
                "the Fargate profile cannot be read back",
                true,
            )
        })
}

// ---------------------------------------------------------------- access entries

fn entry_live(cluster: &str, e: &aws_sdk_eks::types::AccessEntry, prior: Option<&Attrs>) -> Live {
    let principal = e.principal_arn().unwrap_or_default();
    let id = format!("{cluster}/{principal}");
    live(
        &id,
        [
            ("id", json!(id)),
            ("arn", json!(e.access_entry_arn())),
            ("cluster_name", json!(cluster)),
            ("principal_arn", json!(principal)),
            (
                "kubernetes_groups",
                same_set(
                    e.kubernetes_groups().to_vec(),
                    prior.and_then(|a| a.get("kubernetes_groups")),
                ),
            ),
            ("type", json!(e.r#type())),
            ("tags", tags_value(e.tags())),
        ],
    )
}

/// An access scope as the state keeps it: `{"type": "cluster"}` or
/// `{"type": "namespace", "namespaces": [sorted]}`.
fn scope_value(scope: Option<&aws_sdk_eks::types::AccessScope>) -> Value {
    let kind = scope
        .and_then(|s| s.r#type())
        .map_or("cluster", |t| t.as_str());
    let mut namespaces: Vec<String> = scope.map(|s| s.namespaces().to_vec()).unwrap_or_default();
    namespaces.sort();
    if namespaces.is_empty() {
        json!({"type": kind})
    } else {
        json!({"type": kind, "namespaces": namespaces})
    }
}

/// The access policies associated with an entry, sorted by policy ARN.
async fn entry_policies(
    aws: &Aws,
    addr: &Address,
    cluster: &str,
    principal: &str,
) -> Result<Vec<Value>, ProviderError> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page = match aws
            .eks
            .list_associated_access_policies()
            .cluster_name(cluster)
            .principal_arn(principal)
            .set_next_token(next.take())
            .send()
            .await
        {
            Ok(page) => page,
            Err(e) if code_of(&e) == Some("ResourceNotFoundException") => return Ok(out),
            Err(e) => return Err(sdk_error(addr, "ListAssociatedAccessPolicies", &e)),
        };
        for p in page.associated_access_policies() {
            out.push(json!({
                "policy_arn": p.policy_arn(),
                "access_scope": scope_value(p.access_scope()),
            }));
        }
        next = page.next_token().map(str::to_string);
        if next.is_none() {
            break;
        }
    }
    out.sort_by(|a, b| a["policy_arn"].as_str().cmp(&b["policy_arn"].as_str()));
    Ok(out)
}

/// Makes the entry's associated access policies exactly `access_policies`
/// (when the attribute is given): associates what is missing or scoped
/// differently, disassociates the rest.
async fn sync_policies(
    aws: &Aws,
    addr: &Address,
    cluster: &str,
    principal: &str,
    desired: &Attrs,
) -> Result<(), ProviderError> {
    use aws_sdk_eks::types::{AccessScope, AccessScopeType};
    let Some(want) = desired.get("access_policies").and_then(Value::as_array) else {
        return Ok(());
    };
    let have = entry_policies(aws, addr, cluster, principal).await?;
    for w in want {
        if have.contains(w) {
            continue;
        }
        let policy = w["policy_arn"]
            .as_str()
            .ok_or_else(|| invalid(addr, "an access policy has no `policy_arn`"))?;
        let scope = &w["access_scope"];
        let namespaces: Vec<String> = scope["namespaces"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let access_scope = AccessScope::builder()
            .r#type(AccessScopeType::from(
                scope["type"].as_str().unwrap_or("cluster"),
            ))
            .set_namespaces((!namespaces.is_empty()).then_some(namespaces))
            .build();
        aws.eks
            .associate_access_policy()
            .cluster_name(cluster)
            .principal_arn(principal)
            .policy_arn(policy)
            .access_scope(access_scope)
            .send()
            .await
            .map_err(|e| sdk_error(addr, "AssociateAccessPolicy", &e))?;
    }
    for h in &have {
        let arn = h["policy_arn"].as_str().unwrap_or_default();
        if want.iter().any(|w| w["policy_arn"].as_str() == Some(arn)) {
            continue;
        }
        absent_ok(
            addr,
            "DisassociateAccessPolicy",
            aws.eks
                .disassociate_access_policy()
                .cluster_name(cluster)
                .principal_arn(principal)
                .policy_arn(arn)
                .send()
                .await,
        )?;
    }
    Ok(())
}

async fn describe_entry(
    aws: &Aws,
    addr: &Address,
    cluster: &str,
    principal: &str,
) -> Result<Option<aws_sdk_eks::types::AccessEntry>, ProviderError> {
    match aws
        .eks
        .describe_access_entry()
        .cluster_name(cluster)
        .principal_arn(principal)
        .send()
        .await
    {
        Ok(out) => Ok(out.access_entry().cloned()),
        Err(e) if code_of(&e) == Some("ResourceNotFoundException") => Ok(None),
        Err(e) => Err(sdk_error(addr, "DescribeAccessEntry", &e)),
    }
}

/// The entry and its policies are read at once, and beside that whether
/// its cluster is being deleted (its entries go with it).
pub async fn read_entries(aws: &Aws, items: &[(Address, Live)]) -> Found {
    let (alive, entries) = futures::join!(
        clusters_alive(aws, entry_clusters(items)),
        entries_unchecked(aws, items)
    );
    Ok(keep_alive(items, entries?, &alive?))
}

/// Clusters and their access entries: whether an entry's cluster is being
/// deleted comes from the cluster's own read when the state tracks it,
/// asked only for the others.
pub async fn read_clusters_and_entries(
    aws: &Aws,
    clusters: &[(Address, Live)],
    entries: &[(Address, Live)],
) -> (Found, Found) {
    let tracked: BTreeMap<&str, &Address> =
        clusters.iter().map(|(a, l)| (l.id.as_str(), a)).collect();
    let mut others = entry_clusters(entries);
    others.retain(|name, _| !tracked.contains_key(name));
    let (clusters_out, others, found) = futures::join!(
        read_clusters(aws, clusters),
        clusters_alive(aws, others),
        entries_unchecked(aws, entries)
    );
    let entries_out: Found = (|| {
        let mut alive = others?;
        if entries
            .iter()
            .filter_map(|(_, l)| l.id.split_once('/'))
            .any(|(c, _)| tracked.contains_key(c))
        {
            let read = clusters_out.as_ref().map_err(|e| ProviderError {
                addr: batch_addr(entries),
                ..e.clone()
            })?;
            for (name, a) in &tracked {
                alive.insert(name, read.contains_key(*a));
            }
        }
        Ok(keep_alive(entries, found?, &alive))
    })();
    (clusters_out, entries_out)
}

/// Each entry's cluster, with an address to report its errors against.
fn entry_clusters(items: &[(Address, Live)]) -> BTreeMap<&str, &Address> {
    let mut clusters = BTreeMap::new();
    for (a, prior) in items {
        if let Some((cluster, _)) = prior.id.split_once('/') {
            clusters.entry(cluster).or_insert(a);
        }
    }
    clusters
}

/// Whether each cluster exists and is not being deleted.
async fn clusters_alive<'a>(
    aws: &Aws,
    clusters: BTreeMap<&'a str, &Address>,
) -> Result<BTreeMap<&'a str, bool>, ProviderError> {
    let asks = clusters.into_iter().map(|(cluster, a)| async move {
        let c = describe_cluster(aws, a, cluster).await?;
        Ok::<_, ProviderError>((
            cluster,
            c.is_some_and(|c| c.status() != Some(&ClusterStatus::Deleting)),
        ))
    });
    Ok(futures::future::try_join_all(asks)
        .await?
        .into_iter()
        .collect())
}

/// The entries and their policies, whatever their clusters' state.
async fn entries_unchecked(aws: &Aws, items: &[(Address, Live)]) -> Found {
    super::read_each(items, |a, prior| async move {
        let Some((cluster, principal)) = prior.id.split_once('/') else {
            return Ok(None);
        };
        let (entry, policies) = futures::join!(
            describe_entry(aws, a, cluster, principal),
            entry_policies(aws, a, cluster, principal)
        );
        let Some(e) = entry? else {
            return Ok(None);
        };
        let mut found = entry_live(cluster, &e, Some(&prior.attrs));
        found
            .attrs
            .insert("access_policies".into(), Value::Array(policies?));
        Ok(Some(found))
    })
    .await
}

/// The entries found whose cluster is alive.
fn keep_alive(
    items: &[(Address, Live)],
    mut entries: BTreeMap<Address, Live>,
    alive: &BTreeMap<&str, bool>,
) -> BTreeMap<Address, Live> {
    entries.retain(|a, _| {
        items
            .iter()
            .find(|(x, _)| x == a)
            .and_then(|(_, prior)| prior.id.split_once('/'))
            .is_some_and(|(cluster, _)| alive.get(cluster).copied().unwrap_or(false))
    });
    entries
}

pub async fn create_entry(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let cluster = s(addr, desired, "cluster_name")?;
    let principal = s(addr, desired, "principal_arn")?;
    let created = aws
        .retry_consistency(ctx, &["InvalidParameterException"], || async {
            aws.eks
                .create_access_entry()
                .cluster_name(cluster)
                .principal_arn(principal)
                .set_kubernetes_groups(Some(strings(desired, "kubernetes_groups")))
                .set_type(s_opt(desired, "type").map(str::to_string))
                .set_tags(Some(tag_map(desired)))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| sdk_error(addr, "CreateAccessEntry", &e))
        })
        .await;
    match created {
        Ok(()) => {}
        Err(e) if e.code == "ResourceInUseException" => {
            let existing = describe_entry(aws, addr, cluster, principal).await?;
            if !existing
                .as_ref()
                .is_some_and(|x| owned(aws, addr, x.tags()))
            {
                return Err(foreign(
                    addr,
                    "access entry",
                    principal,
                    &format!("{cluster}/{principal}"),
                ));
            }
            let prior = entry_live(
                cluster,
                existing
                    .as_ref()
                    .ok_or_else(|| invalid(addr, "the access entry vanished"))?,
                None,
            );
            return update_entry(aws, addr, &prior, desired, ctx).await;
        }
        Err(e) => return Err(e),
    }
    sync_policies(aws, addr, cluster, principal, desired).await?;
    let prior = Live {
        id: format!("{cluster}/{principal}"),
        attrs: desired.clone(),
    };
    read_entries(aws, &[(addr.clone(), prior)])
        .await?
        .remove(addr)
        .ok_or_else(|| {
            ProviderError::new(
                addr,
                "ResourceNotFoundException",
                "the access entry cannot be read back",
                true,
            )
        })
}

pub async fn update_entry(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    desired: &Attrs,
    _ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let (cluster, principal) = prior
        .id
        .split_once('/')
        .ok_or_else(|| invalid(addr, "bad access entry id"))?;
    if desired.get("kubernetes_groups") != prior.attrs.get("kubernetes_groups") {
        aws.eks
            .update_access_entry()
            .cluster_name(cluster)
            .principal_arn(principal)
            .set_kubernetes_groups(Some(strings(desired, "kubernetes_groups")))
            .send()
            .await
            .map_err(|e| sdk_error(addr, "UpdateAccessEntry", &e))?;
    }
    sync_policies(aws, addr, cluster, principal, desired).await?;
    if let Some(arn) = s_opt(&prior.attrs, "arn") {
        sync_tags(aws, addr, arn, prior, desired).await?;
    }
    read_entries(aws, &[(addr.clone(), prior.clone())])
        .await?
        .remove(addr)
        .ok_or_else(|| {
            ProviderError::new(
                addr,
                "ResourceNotFoundException",
                "the access entry cannot be read back",
                true,
            )
        })
}

// ---------------------------------------------------------------- OIDC provider

fn issuer_host(url: &str) -> &str {
    url.strip_prefix("https://").unwrap_or(url)
}

pub async fn read_oidc(aws: &Aws, items: &[(Address, Live)]) -> Found {
    let mut out = BTreeMap::new();
    for (a, prior) in items {
        let got = match aws
            .iam
            .get_open_id_connect_provider()
            .open_id_connect_provider_arn(&prior.id)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if code_of(&e) == Some("NoSuchEntity") => continue,
            Err(e) => return Err(sdk_error(a, "GetOpenIDConnectProvider", &e)),
        };
        // IAM stores the URL without its scheme.
        let host = got.url().unwrap_or_default();
        let tags = super::tags::to_value(got.tags().iter().map(|t| (t.key(), t.value())));
        out.insert(
            a.clone(),
            live(
                &prior.id,
                [
                    ("id", json!(prior.id)),
                    ("arn", json!(prior.id)),
                    ("url", json!(format!("https://{}", issuer_host(host)))),
                    ("issuer_host", json!(issuer_host(host))),
                    ("thumbprint_list", json!(got.thumbprint_list())),
                    (
                        "client_id_list",
                        same_set(
                            got.client_id_list().to_vec(),
                            prior.attrs.get("client_id_list"),
                        ),
                    ),
                    ("tags", tags),
                ],
            ),
        );
    }
    Ok(out)
}

pub async fn create_oidc(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let url = s(addr, desired, "url")?;
    let tags: Vec<aws_sdk_iam::types::Tag> = super::tags::desired(desired)
        .into_iter()
        .map(|(k, v)| {
            aws_sdk_iam::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| invalid(addr, format!("bad tag: {e}")))
        })
        .collect::<Result<_, _>>()?;
    // The thumbprint of the issuer's top intermediate CA, as `eksctl` and
    // the IAM user guide obtain it, so the trust is what was seen here. An
    // issuer out of reach from here (no egress, a proxy that refuses) is
    // registered without one: IAM then retrieves it itself, from AWS.
    ctx.status("getting the issuer's certificate thumbprint");
    let thumbprint = match super::thumbprint::of_issuer(url).await {
        Ok(thumbprint) => Some(vec![thumbprint]),
        Err(e) if e.unreachable => {
            ctx.warn(&format!(
                "cannot reach the OIDC issuer `{url}` from here: {e}; registering it without a thumbprint, which IAM retrieves itself"
            ));
            None
        }
        Err(e) => {
            return Err(ProviderError::new(
                addr,
                "IssuerThumbprint",
                format!("cannot obtain the certificate thumbprint of the OIDC issuer `{url}`: {e}"),
                e.retryable,
            ));
        }
    };
    let created = aws
        .iam
        .create_open_id_connect_provider()
        .url(url)
        .set_thumbprint_list(thumbprint)
        .set_client_id_list(Some(strings(desired, "client_id_list")))
        .set_tags(Some(tags))
        .send()
        .await;
    let arn = match created {
        Ok(out) => out
            .open_id_connect_provider_arn()
            .ok_or_else(|| invalid(addr, "CreateOpenIDConnectProvider returned no ARN"))?
            .to_string(),
        Err(e) if code_of(&e) == Some("EntityAlreadyExists") => {
            let list = aws
                .iam
                .list_open_id_connect_providers()
                .send()
                .await
                .map_err(|e| sdk_error(addr, "ListOpenIDConnectProviders", &e))?;
            let host = issuer_host(url);
            let arn = list
                .open_id_connect_provider_list()
                .iter()
                .filter_map(|p| p.arn())
                .find(|a| a.ends_with(&format!("oidc-provider/{host}")))
                .ok_or_else(|| sdk_error(addr, "CreateOpenIDConnectProvider", &e))?
                .to_string();
            let got = aws
                .iam
                .get_open_id_connect_provider()
                .open_id_connect_provider_arn(&arn)
                .send()
                .await
                .map_err(|e| sdk_error(addr, "GetOpenIDConnectProvider", &e))?;
            let addr_s = addr.to_string();
            let ours = got
                .tags()
                .iter()
                .any(|t| t.key() == STACK_TAG && t.value() == aws.stack)
                && got
                    .tags()
                    .iter()
                    .any(|t| t.key() == ADDRESS_TAG && t.value() == addr_s);
            if !ours {
                return Err(ProviderError::new(
                    addr,
                    "EntityAlreadyExists",
                    format!(
                        "an IAM OIDC provider for `{host}` already exists and is not this stack's; delete it or import it"
                    ),
                    false,
                ));
            }
            arn
        }
        Err(e) => return Err(sdk_error(addr, "CreateOpenIDConnectProvider", &e)),
    };
    let prior = Live {
        id: arn,
        attrs: desired.clone(),
    };
    let found = aws
        .retry_consistency(ctx, &["NoSuchEntity"], || async {
            read_oidc(aws, &[(addr.clone(), prior.clone())])
                .await?
                .remove(addr)
                .ok_or_else(|| ProviderError::new(addr, "NoSuchEntity", "not visible yet", true))
        })
        .await?;
    Ok(found)
}

pub async fn update_oidc(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    desired: &Attrs,
    _ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let arn = prior.id.as_str();
    let want = strings(desired, "client_id_list");
    let have = strings(&prior.attrs, "client_id_list");
    for id in want.iter().filter(|c| !have.contains(c)) {
        aws.iam
            .add_client_id_to_open_id_connect_provider()
            .open_id_connect_provider_arn(arn)
            .client_id(id)
            .send()
            .await
            .map_err(|e| sdk_error(addr, "AddClientIDToOpenIDConnectProvider", &e))?;
    }
    for id in have.iter().filter(|c| !want.contains(c)) {
        aws.iam
            .remove_client_id_from_open_id_connect_provider()
            .open_id_connect_provider_arn(arn)
            .client_id(id)
            .send()
            .await
            .map_err(|e| sdk_error(addr, "RemoveClientIDFromOpenIDConnectProvider", &e))?;
    }
    super::iam::sync_tags(aws, addr, arn, prior, desired).await?;
    read_oidc(aws, &[(addr.clone(), prior.clone())])
        .await?
        .remove(addr)
        .ok_or_else(|| {
            ProviderError::new(
                addr,
                "NoSuchEntity",
                "the OIDC provider cannot be read back",
                true,
            )
        })
}

// ---------------------------------------------------------------- deletes

pub async fn delete(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    ctx: &OpContext<'_>,
) -> Result<(), ProviderError> {
    match addr.kind() {
        "eks_cluster" => {
            let name = prior.id.as_str();
            // The controller's load balancers outlive the cluster and keep
            // its subnets in use: remove them first (its Deployment went
            // before the cluster, so nothing makes them again).
            super::elbv2::sweep_load_balancers(aws, addr, name, ctx).await?;
            // Fargate profiles still being deleted keep the cluster in use.
            let r = while_busy(aws, addr, ctx, || async {
                absent_ok(
                    addr,
                    "DeleteCluster",
                    aws.eks.delete_cluster().name(name).send().await,
                )
                .map(|_| ())
            })
            .await;
            r?;
            wait_cluster_gone(aws, addr, name, ctx).await?;
            super::elbv2::sweep_security_groups(aws, addr, name, ctx)
                .await
                .map(|_| ())
        }
        "eks_fargate_profile" => {
            let Some((cluster, name)) = profile_ids(&prior.id) else {
                return Ok(());
            };
            while_busy(aws, addr, ctx, || async {
                absent_ok(
                    addr,
                    "DeleteFargateProfile",
                    aws.eks
                        .delete_fargate_profile()
                        .cluster_name(cluster)
                        .fargate_profile_name(name)
                        .send()
                        .await,
                )
                .map(|_| ())
            })
            .await?;
            aws.wait_until(addr, ctx, "deleted", aws.timeouts.eks_profile, || async {
                Ok(describe_profile(aws, addr, cluster, name)
                    .await?
                    .is_none()
                    .then_some(()))
            })
            .await
        }
        "eks_access_entry" => {
            let Some((cluster, principal)) = prior.id.split_once('/') else {
                return Ok(());
            };
            absent_ok(
                addr,
                "DeleteAccessEntry",
                aws.eks
                    .delete_access_entry()
                    .cluster_name(cluster)
                    .principal_arn(principal)
                    .send()
                    .await,
            )
            .map(|_| ())
        }
        _ => absent_ok(
            addr,
            "DeleteOpenIDConnectProvider",
            aws.iam
                .delete_open_id_connect_provider()
                .open_id_connect_provider_arn(&prior.id)
                .send()
                .await,
        )
        .map(|_| ()),
    }
}
