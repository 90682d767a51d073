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
const TAGS_PER_CALL: usize = 20;

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

/// The ARNs among `arns` whose tags name `cluster`.
async fn tagged_for(
    aws: &Aws,
    addr: &Address,
    arns: Vec<String>,
    cluster: &str,
) -> Result<Vec<String>, ProviderError> {
    let mut out = Vec::new();
    for chunk in arns.chunks(TAGS_PER_CALL) {
        let tags = aws
            .elbv2
            .describe_tags()
            .set_resource_arns(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| sdk_error(addr, "DescribeTags", &e))?;
        for d in tags.tag_descriptions() {
            let ours = d
                .tags()
                .iter()
                .any(|t| t.key() == Some(CLUSTER_TAG) && t.value() == Some(cluster));
            if ours && let Some(arn) = d.resource_arn() {
                out.push(arn.to_string());
            }
        }
    }
    Ok(out)
}

/// Everything tagged for `cluster` that still exists.
pub async fn leftovers(
    aws: &Aws,
    addr: &Address,
    cluster: &str,
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
        .filters(filter(&format!("tag:{CLUSTER_TAG}"), [cluster]))
        .send()
        .await
        .map_err(|e| sdk_error(addr, "DescribeSecurityGroups", &e))?;
    Ok(Leftovers {
        load_balancers: tagged_for(aws, addr, lbs, cluster).await?,
        target_groups: tagged_for(aws, addr, tgs, cluster).await?,
        security_groups: sgs
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect(),
    })
}

/// Deletes the load balancers and target groups the controller made for
/// `cluster` and waits until the ELBv2 API no longer lists them; before the
/// cluster is deleted. Returns what it found.
pub async fn sweep_load_balancers(
    aws: &Aws,
    addr: &Address,
    cluster: &str,
    ctx: &OpContext<'_>,
) -> Result<Leftovers, ProviderError> {
    let found = leftovers(aws, addr, cluster).await?;
    if found.is_empty() {
        return Ok(found);
    }
    ctx.status(&format!(
        "removing what the load balancer controller made for cluster `{cluster}`: {} load balancer(s), {} target group(s)",
        found.load_balancers.len(),
        found.target_groups.len(),
    ));
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
    let lb_timeout = aws.timeouts.consistency.max(Duration::from_secs(60));
    aws.wait_until(
        addr,
        ctx,
        "the controller's load balancers are gone",
        lb_timeout,
        || async {
            let now = leftovers(aws, addr, cluster).await?;
            Ok(now
                .load_balancers
                .iter()
                .all(|a| !found.load_balancers.contains(a))
                .then_some(()))
        },
    )
    .await?;
    // A target group is in use until its load balancer's listeners are gone.
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
    }
    // A security group is in use until the load balancer's network
    // interfaces are released, which takes a while after it is deleted.
    for id in &found {
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
    Ok(found)
}
