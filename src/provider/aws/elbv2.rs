//! What the AWS Load Balancer Controller made for a cluster — load
//! balancers, target groups, security groups, tagged
//! `elbv2.k8s.aws/cluster=<cluster>` — found through the ELBv2 and EC2 APIs
//! and removed before the cluster goes: nothing else would remove them once
//! the controller is gone, and they keep the VPC's subnets in use.

use std::time::Duration;

use super::Aws;
use super::error::{absent_ok, sdk_error};
use super::tags::filter;
use crate::addr::Address;
use crate::provider::{OpContext, ProviderError};

/// The tag the controller puts on everything it makes, naming its cluster.
pub const CLUSTER_TAG: &str = "elbv2.k8s.aws/cluster";

/// ELBv2 DescribeTags takes at most 20 ARNs per call.
pub(super) const TAGS_PER_CALL: usize = 20;

/// What the controller left for one cluster, by ARN or id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leftovers {
    pub load_balancers: Vec<String>,
    pub target_groups: Vec<String>,
    pub security_groups: Vec<String>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.load_balancers.is_empty()
            && self.target_groups.is_empty()
            && self.security_groups.is_empty()
    }
}

/// The tags the controller names what it made for one Ingress (or
/// IngressGroup) and for one `LoadBalancer` Service.
pub const INGRESS_STACK_TAG: &str = "ingress.k8s.aws/stack";
pub const SERVICE_STACK_TAG: &str = "service.k8s.aws/stack";

/// Which of the controller's objects: everything for a cluster, or only
/// those made for some Ingresses and Services (`ns/name`, or a group name).
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub cluster: &'a str,
    pub stacks: Option<&'a std::collections::BTreeSet<String>>,
}

impl Scope<'_> {
    fn covers<'t>(&self, mut tags: impl Iterator<Item = (&'t str, &'t str)> + Clone) -> bool {
        let cluster = tags
            .clone()
            .any(|(k, v)| k == CLUSTER_TAG && v == self.cluster);
        cluster
            && self.stacks.is_none_or(|stacks| {
                tags.any(|(k, v)| {
                    (k == INGRESS_STACK_TAG || k == SERVICE_STACK_TAG) && stacks.contains(v)
                })
            })
    }
}

/// The tags of each of `arns` that still exists, 20 per call. A call
/// fails whole when one of its ARNs is gone (deleted since it was listed):
/// that batch is asked again one ARN at a time, skipping the gone.
pub(super) async fn tags_of(
    aws: &Aws,
    addr: &Address,
    arns: &[String],
) -> Result<Vec<(String, Vec<(String, String)>)>, ProviderError> {
    async fn describe(
        aws: &Aws,
        addr: &Address,
        arns: &[String],
    ) -> Result<Vec<(String, Vec<(String, String)>)>, ProviderError> {
        let tags = aws
            .elbv2
            .describe_tags()
            .set_resource_arns(Some(arns.to_vec()))
            .send()
            .await
            .map_err(|e| sdk_error(addr, "DescribeTags", &e))?;
        Ok(tags
            .tag_descriptions()
            .iter()
            .filter_map(|d| {
                let pairs = d
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                    .collect();
                Some((d.resource_arn()?.to_string(), pairs))
            })
            .collect())
    }
    let gone = |e: &ProviderError| {
        matches!(
            e.code.as_str(),
            "LoadBalancerNotFound" | "TargetGroupNotFound"
        )
    };
    let mut out = Vec::new();
    for chunk in arns.chunks(TAGS_PER_CALL) {
        match describe(aws, addr, chunk).await {
            Ok(found) => out.extend(found),
            Err(e) if gone(&e) => {
                for arn in chunk {
                    match describe(aws, addr, std::slice::from_ref(arn)).await {
                        Ok(found) => out.extend(found),
                        Err(e) if gone(&e) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The ARNs among `arns` whose tags are in `scope`.
async fn tagged_in(
    aws: &Aws,
    addr: &Address,
    arns: Vec<String>,
    scope: Scope<'_>,
) -> Result<Vec<String>, ProviderError> {
    Ok(tags_of(aws, addr, &arns)
        .await?
        .into_iter()
        .filter(|(_, tags)| scope.covers(tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
        .map(|(arn, _)| arn)
        .collect())
}

/// Everything tagged for `cluster` that still exists.
pub async fn leftovers(
    aws: &Aws,
    addr: &Address,
    cluster: &str,
) -> Result<Leftovers, ProviderError> {
    made_for(
        aws,
        addr,
        Scope {
            cluster,
            stacks: None,
        },
    )
    .await
}

/// What the controller made in `scope` that still exists (ELBv2 and EC2).
pub async fn made_for(
    aws: &Aws,
    addr: &Address,
    scope: Scope<'_>,
) -> Result<Leftovers, ProviderError> {
    let mut lbs = Vec::new();
    let mut pages = aws.elbv2.describe_load_balancers().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sdk_error(addr, "DescribeLoadBalancers", &e))?;
        lbs.extend(
            page.load_balancers()
                .iter()
                .filter_map(|l| l.load_balancer_arn().map(str::to_string)),
        );
    }
    let mut tgs = Vec::new();
    let mut pages = aws.elbv2.describe_target_groups().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sdk_error(addr, "DescribeTargetGroups", &e))?;
        tgs.extend(
            page.target_groups()
                .iter()
                .filter_map(|t| t.target_group_arn().map(str::to_string)),
        );
    }
    let sgs = aws
        .ec2
        .describe_security_groups()
        .filters(filter(&format!("tag:{CLUSTER_TAG}"), [scope.cluster]))
        .send()
        .await
        .map_err(|e| sdk_error(addr, "DescribeSecurityGroups", &e))?;
    Ok(Leftovers {
        load_balancers: tagged_in(aws, addr, lbs, scope).await?,
        target_groups: tagged_in(aws, addr, tgs, scope).await?,
        security_groups: sgs
            .security_groups()
            .iter()
            .filter(|g| scope.covers(g.tags().iter().filter_map(|t| Some((t.key()?, t.value()?)))))
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect(),
    })
}

/// Deletes the load balancers and target groups of `found`, waiting until
/// ELBv2 no longer lists the load balancers (a target group is in use until
/// its load balancer's listeners are gone).
async fn delete_load_balancers(
    aws: &Aws,
    addr: &Address,
    scope: Scope<'_>,
    found: &Leftovers,
    ctx: &OpContext<'_>,
) -> Result<(), ProviderError> {
    for arn in &found.load_balancers {
        absent_ok(
            addr,
            "DeleteLoadBalancer",
            aws.elbv2
                .delete_load_balancer()
                .load_balancer_arn(arn)
                .send()
                .await,
        )?;
    }
    let timeout = aws.timeouts.consistency.max(Duration::from_secs(60));
    aws.wait_until(
        addr,
        ctx,
        "the controller's load balancers are gone",
        timeout,
        || async {
            let now = made_for(aws, addr, scope).await?;
            Ok(now
                .load_balancers
                .iter()
                .all(|a| !found.load_balancers.contains(a))
                .then_some(()))
        },
    )
    .await?;
    for arn in &found.target_groups {
        aws.retry_consistency(
            ctx,
            &["ResourceInUse", "ResourceInUseException"],
            || async {
                absent_ok(
                    addr,
                    "DeleteTargetGroup",
                    aws.elbv2
                        .delete_target_group()
                        .target_group_arn(arn)
                        .send()
                        .await,
                )
                .map(|_| ())
            },
        )
        .await?;
    }
    Ok(())
}

/// Deletes security groups, waiting while they are still in use (a load
/// balancer's network interfaces are released a while after it is deleted).
async fn delete_security_groups(
    aws: &Aws,
    addr: &Address,
    ids: &[String],
    ctx: &OpContext<'_>,
) -> Result<(), ProviderError> {
    for id in ids {
        aws.retry_consistency(
            ctx,
            &["DependencyViolation", "InvalidGroup.InUse"],
            || async {
                absent_ok(
                    addr,
                    "DeleteSecurityGroup",
                    aws.ec2.delete_security_group().group_id(id).send().await,
                )
                .map(|_| ())
            },
        )
        .await?;
    }
    Ok(())
}

/// Deletes the load balancers and target groups the controller made for
/// `cluster`; before the cluster is deleted. Returns what it found.
pub async fn sweep_load_balancers(
    aws: &Aws,
    addr: &Address,
    cluster: &str,
    ctx: &OpContext<'_>,
) -> Result<Leftovers, ProviderError> {
    let scope = Scope {
        cluster,
        stacks: None,
    };
    let found = made_for(aws, addr, scope).await?;
    if !found.is_empty() {
        ctx.status(&format!(
            "removing what the load balancer controller made for cluster `{cluster}`: {} load balancer(s), {} target group(s)",
            found.load_balancers.len(),
            found.target_groups.len(),
        ));
        delete_load_balancers(aws, addr, scope, &found, ctx).await?;
    }
    Ok(found)
}

/// Deletes the security groups the controller made for `cluster`; after
/// the cluster is gone, since its security group refers to the
/// controller's shared one until then.
pub async fn sweep_security_groups(
    aws: &Aws,
    addr: &Address,
    cluster: &str,
    ctx: &OpContext<'_>,
) -> Result<Vec<String>, ProviderError> {
    let found = leftovers(aws, addr, cluster).await?.security_groups;
    if !found.is_empty() {
        ctx.status(&format!(
            "removing {} security group(s) the load balancer controller made for cluster `{cluster}`",
            found.len()
        ));
        delete_security_groups(aws, addr, &found, ctx).await?;
    }
    Ok(found)
}

/// Deletes what the controller made in `scope` — load balancers, target
/// groups, then security groups — for when the controller did not.
/// Returns what it removed.
pub async fn remove_made_for(
    aws: &Aws,
    addr: &Address,
    scope: Scope<'_>,
    ctx: &OpContext<'_>,
) -> Result<Leftovers, ProviderError> {
    let found = made_for(aws, addr, scope).await?;
    delete_load_balancers(aws, addr, scope, &found, ctx).await?;
    delete_security_groups(aws, addr, &found.security_groups, ctx).await?;
    Ok(found)
}
