//! Thorough discovery, for `drift` and the end of a destroy: objects tagged
//! as the stack's in every service slipway uses (IAM, ECR, EKS, ELBv2 —
//! EC2 is in `tags`), members of managed collections the state does not
//! know, and what the load balancer controller made for the stack's
//! cluster. Every call here is a read.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::Aws;
use super::elbv2::CLUSTER_TAG;
use super::error::{absent_ok, sdk_error};
use super::tags::{ADDRESS_TAG, STACK_TAG, filter};
use crate::addr::{Address, Domain};
use crate::provider::{
    ControllerMade, DiscoverScope, Discovery, Extra, Fronts, ProviderError, Tagged,
};

/// Tag-reading calls in flight at once.
const CONCURRENT_READS: usize = 8;

/// Everything beyond tagged EC2 objects.
pub async fn discover(aws: &Aws, scope: &DiscoverScope<'_>) -> Result<Discovery, ProviderError> {
    let (iam, ecr, eks, elb, extras) = futures::join!(
        iam_tagged(aws, scope),
        ecr_tagged(aws, scope),
        eks_tagged(aws, scope),
        elbv2_inventory(aws, scope),
        extras(aws, scope),
    );
    let mut errors = Vec::new();
    let iam = ok_or_note(iam, &mut errors);
    let ecr = ok_or_note(ecr, &mut errors);
    let eks = ok_or_note(eks, &mut errors);
    let elb = ok_or_note(elb, &mut errors);
    let extras = ok_or_note(extras, &mut errors);
    if let Some(e) = combined(errors) {
        return Err(e);
    }
    let mut out = Discovery::default();
    out.tagged.extend(iam);
    out.tagged.extend(ecr);
    out.tagged.extend(eks);
    out.extend(elb);
    out.extras.extend(extras);
    Ok(out)
}

/// The value, or its default with the error noted.
pub(super) fn ok_or_note<T: Default>(
    r: Result<T, ProviderError>,
    errors: &mut Vec<ProviderError>,
) -> T {
    r.unwrap_or_else(|e| {
        errors.push(e);
        T::default()
    })
}

/// Every failure as one error, so that each part left unchecked is named.
pub(super) fn combined(mut errors: Vec<ProviderError>) -> Option<ProviderError> {
    let first = errors.first()?.clone();
    if errors.len() == 1 {
        return errors.pop();
    }
    let message = errors
        .iter()
        .map(|e| format!("{}: {}", e.code, e.message))
        .collect::<Vec<_>>()
        .join("; ");
    Some(ProviderError {
        message,
        retryable: errors.iter().all(|e| e.retryable),
        ..first
    })
}

fn probe() -> Address {
    Address::domain_wide(Domain::Aws)
}

/// The address an object tagged as `stack`'s claims, or `None` when it is
/// not the stack's. Without an address tag, one is made from its kind and
/// id (characters an address cannot hold become `_`).
pub(super) fn claim<'t>(
    stack: &str,
    kind: &str,
    id: &str,
    mut tags: impl Iterator<Item = (&'t str, &'t str)> + Clone,
) -> Option<Tagged> {
    if !tags.clone().any(|(k, v)| k == STACK_TAG && v == stack) {
        return None;
    }
    let claimed = tags
        .find(|(k, _)| *k == ADDRESS_TAG)
        .and_then(|(_, v)| v.parse::<Address>().ok());
    let claims_address = claimed.is_some();
    let addr = claimed.or_else(|| synthetic(kind, id))?;
    Some(Tagged {
        addr,
        id: id.to_string(),
        claims_address,
    })
}

/// `aws.KIND.ID`, for an object that names no address of its own.
pub(super) fn synthetic(kind: &str, id: &str) -> Option<Address> {
    Address::made_up(Domain::Aws, kind, id)
}

/// Runs `read` for each item, a few at a time, keeping the first error.
async fn each<T, R, F, Fut>(items: Vec<T>, read: F) -> Result<Vec<R>, ProviderError>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<Option<R>, ProviderError>>,
{
    let mut out = Vec::new();
    let mut items = items.into_iter();
    loop {
        let batch: Vec<Fut> = items.by_ref().take(CONCURRENT_READS).map(&read).collect();
        if batch.is_empty() {
            return Ok(out);
        }
        for r in futures::future::join_all(batch).await {
            if let Some(x) = r? {
                out.push(x);
            }
        }
    }
}

// ---------------------------------------------------------------- IAM

async fn iam_tagged(aws: &Aws, scope: &DiscoverScope<'_>) -> Result<Vec<Tagged>, ProviderError> {
    let at = probe();
    let at = &at;
    let stack = scope.stack;
    // Names are unique per kind only (a role and an instance profile are
    // often named alike).
    let (roles_known, policies_known, profiles_known, oidc_known) = (
        ids_of(scope, "iam_role"),
        ids_of(scope, "iam_policy"),
        ids_of(scope, "iam_instance_profile"),
        ids_of(scope, "iam_openid_connect_provider"),
    );

    // The four lists at once.
    let roles = async {
        let mut roles = Vec::new();
        let mut pages = aws.iam.list_roles().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error(at, "ListRoles", &e))?;
            roles.extend(
                page.roles()
                    .iter()
                    // Roles AWS manages for its services are never a stack's.
                    .filter(|r| !r.path().starts_with("/aws-service-role/"))
                    .filter(|r| !r.path().starts_with("/aws-reserved/"))
                    .map(|r| r.role_name().to_string())
                    .filter(|n| !roles_known.contains(n.as_str())),
            );
        }
        Ok::<_, ProviderError>(roles)
    };
    let policies = async {
        let mut policies = Vec::new();
        let mut pages = aws
            .iam
            .list_policies()
            .scope(aws_sdk_iam::types::PolicyScopeType::Local)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error(at, "ListPolicies", &e))?;
            policies.extend(
                page.policies()
                    .iter()
                    .filter_map(|p| p.arn().map(str::to_string))
                    .filter(|a| !policies_known.contains(a.as_str())),
            );
        }
        Ok(policies)
    };
    let profiles = async {
        let mut profiles = Vec::new();
        let mut pages = aws.iam.list_instance_profiles().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error(at, "ListInstanceProfiles", &e))?;
            profiles.extend(
                page.instance_profiles()
                    .iter()
                    .map(|p| p.instance_profile_name().to_string())
                    .filter(|n| !profiles_known.contains(n.as_str())),
            );
        }
        Ok(profiles)
    };
    let oidc = async {
        Ok(aws
            .iam
            .list_open_id_connect_providers()
            .send()
            .await
            .map_err(|e| sdk_error(at, "ListOpenIDConnectProviders", &e))?
            .open_id_connect_provider_list()
            .iter()
            .filter_map(|p| p.arn().map(str::to_string))
            .filter(|a| !oidc_known.contains(a.as_str()))
            .collect::<Vec<String>>())
    };
    let (roles, policies, profiles, oidc) = futures::try_join!(roles, policies, profiles, oidc)?;

    // A tag read of an object deleted meanwhile finds nothing: it is gone.
    let mut out = claims(stack, "iam_role", roles, |name| async move {
        let t = absent_ok(
            at,
            "ListRoleTags",
            aws.iam.list_role_tags().role_name(&name).send().await,
        )?;
        Ok(t.map(|t| iam_pairs(t.tags())))
    })
    .await?;
    out.extend(
        claims(stack, "iam_policy", policies, |arn| async move {
            let t = absent_ok(
                at,
                "ListPolicyTags",
                aws.iam.list_policy_tags().policy_arn(&arn).send().await,
            )?;
            Ok(t.map(|t| iam_pairs(t.tags())))
        })
        .await?,
    );
    out.extend(
        claims(stack, "iam_instance_profile", profiles, |name| async move {
            let t = absent_ok(
                at,
                "ListInstanceProfileTags",
                aws.iam
                    .list_instance_profile_tags()
                    .instance_profile_name(&name)
                    .send()
                    .await,
            )?;
            Ok(t.map(|t| iam_pairs(t.tags())))
        })
        .await?,
    );
    out.extend(
        claims(
            stack,
            "iam_openid_connect_provider",
            oidc,
            |arn| async move {
                let t = absent_ok(
                    at,
                    "ListOpenIDConnectProviderTags",
                    aws.iam
                        .list_open_id_connect_provider_tags()
                        .open_id_connect_provider_arn(&arn)
                        .send()
                        .await,
                )?;
                Ok(t.map(|t| iam_pairs(t.tags())))
            },
        )
        .await?,
    );
    Ok(out)
}

fn iam_pairs(tags: &[aws_sdk_iam::types::Tag]) -> Vec<(String, String)> {
    tags.iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

/// What each of `ids` (of `kind`) claims, from the tags `read` finds for it
/// (`None`: gone meanwhile).
async fn claims<F, Fut>(
    stack: &str,
    kind: &str,
    ids: Vec<String>,
    read: F,
) -> Result<Vec<Tagged>, ProviderError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Vec<(String, String)>>, ProviderError>>,
{
    each(ids, |id| {
        let tags = read(id.clone());
        async move {
            Ok(tags.await?.and_then(|t| {
                claim(
                    stack,
                    kind,
                    &id,
                    t.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                )
            }))
        }
    })
    .await
}

// ---------------------------------------------------------------- ECR and EKS

async fn ecr_tagged(aws: &Aws, scope: &DiscoverScope<'_>) -> Result<Vec<Tagged>, ProviderError> {
    let at = probe();
    let at = &at;
    let known = ids_of(scope, "ecr_repository");
    let mut repos = Vec::new();
    let mut pages = aws.ecr.describe_repositories().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sdk_error(at, "DescribeRepositories", &e))?;
        repos.extend(page.repositories().iter().filter_map(|r| {
            let (name, arn) = (r.repository_name()?, r.repository_arn()?);
            (!known.contains(name)).then(|| (name.to_string(), arn.to_string()))
        }));
    }
    each(repos, |(name, arn)| async move {
        let tags = absent_ok(
            at,
            "ListTagsForResource",
            aws.ecr
                .list_tags_for_resource()
                .resource_arn(arn)
                .send()
                .await,
        )?;
        Ok(tags.and_then(|t| {
            claim(
                scope.stack,
                "ecr_repository",
                &name,
                t.tags().iter().map(|t| (t.key(), t.value())),
            )
        }))
    })
    .await
}

async fn eks_tagged(aws: &Aws, scope: &DiscoverScope<'_>) -> Result<Vec<Tagged>, ProviderError> {
    let at = probe();
    let at = &at;
    let known = ids_of(scope, "eks_cluster");
    let mut names = Vec::new();
    let mut pages = aws.eks.list_clusters().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sdk_error(at, "ListClusters", &e))?;
        names.extend(
            page.clusters()
                .iter()
                .filter(|n| !known.contains(n.as_str()))
                .cloned(),
        );
    }
    each(names, |name| async move {
        let out = absent_ok(
            at,
            "DescribeCluster",
            aws.eks.describe_cluster().name(&name).send().await,
        )?;
        Ok(out.and_then(|o| {
            let tags = o.cluster()?.tags()?;
            claim(
                scope.stack,
                "eks_cluster",
                &name,
                tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )
        }))
    })
    .await
}

// ---------------------------------------------------------------- ELBv2

/// The names of the stack's clusters, as the state records them.
fn cluster_names(scope: &DiscoverScope<'_>) -> BTreeSet<String> {
    scope
        .managed
        .iter()
        .filter(|(a, _)| a.kind() == "eks_cluster")
        .map(|(a, l)| {
            l.attrs
                .get("name")
                .and_then(Value::as_str)
                .map_or_else(|| a.name().to_string(), str::to_string)
        })
        .collect()
}

/// What an object of the controller's fronts, from its tags.
fn fronts<'t>(mut tags: impl Iterator<Item = (&'t str, &'t str)> + Clone) -> Option<Fronts> {
    if let Some((_, v)) = tags
        .clone()
        .find(|(k, _)| *k == super::elbv2::INGRESS_STACK_TAG)
    {
        return Some(if v.contains('/') {
            Fronts::Ingress(v.to_string())
        } else {
            Fronts::IngressGroup(v.to_string())
        });
    }
    tags.find(|(k, _)| *k == super::elbv2::SERVICE_STACK_TAG)
        .map(|(_, v)| Fronts::Service(v.to_string()))
}

/// Load balancers and target groups tagged as the stack's (slipway makes
/// none, so any is unmanaged), and what the controller made for the
/// stack's clusters, with its security groups.
async fn elbv2_inventory(aws: &Aws, scope: &DiscoverScope<'_>) -> Result<Discovery, ProviderError> {
    let at = probe();
    let at = &at;
    let clusters = cluster_names(scope);
    // The two lists, and the security groups the controller made (found by
    // tag, beside them).
    let balancers = async {
        let mut named = Vec::new();
        let mut pages = aws.elbv2.describe_load_balancers().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error(at, "DescribeLoadBalancers", &e))?;
            for l in page.load_balancers() {
                if let Some(arn) = l.load_balancer_arn() {
                    let name = l.load_balancer_name().unwrap_or(arn).to_string();
                    named.push((arn.to_string(), ("load_balancer", name)));
                }
            }
        }
        Ok::<_, ProviderError>(named)
    };
    let target_groups = async {
        let mut named = Vec::new();
        let mut pages = aws.elbv2.describe_target_groups().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error(at, "DescribeTargetGroups", &e))?;
            for t in page.target_groups() {
                if let Some(arn) = t.target_group_arn() {
                    let name = t.target_group_name().unwrap_or(arn).to_string();
                    named.push((arn.to_string(), ("target_group", name)));
                }
            }
        }
        Ok(named)
    };
    let groups = async {
        if clusters.is_empty() {
            return Ok(Vec::new());
        }
        let groups = aws
            .ec2
            .describe_security_groups()
            .filters(filter(
                &format!("tag:{CLUSTER_TAG}"),
                clusters.iter().cloned(),
            ))
            .send()
            .await
            .map_err(|e| sdk_error(at, "DescribeSecurityGroups", &e))?;
        let mut made = Vec::new();
        for g in groups.security_groups() {
            let Some(id) = g.group_id() else { continue };
            let pairs = g.tags().iter().filter_map(|t| Some((t.key()?, t.value()?)));
            made.push(ControllerMade {
                kind: "security_group",
                id: id.to_string(),
                name: g.group_name().unwrap_or(id).to_string(),
                fronts: fronts(pairs),
            });
        }
        Ok(made)
    };
    let tagged = async {
        let (balancers, target_groups) = futures::try_join!(balancers, target_groups)?;
        let named: BTreeMap<String, (&'static str, String)> =
            balancers.into_iter().chain(target_groups).collect();
        let arns: Vec<String> = named.keys().cloned().collect();
        let mut out = Discovery::default();
        for (arn, tags) in super::elbv2::tags_of(aws, at, &arns).await? {
            let Some((kind, name)) = named.get(&arn) else {
                continue;
            };
            let pairs = tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            if let Some(t) = claim(scope.stack, kind, name, pairs.clone()) {
                out.tagged.push(Tagged {
                    id: arn.clone(),
                    ..t
                });
            }
            if pairs
                .clone()
                .any(|(k, v)| k == CLUSTER_TAG && clusters.contains(v))
            {
                out.controller.push(ControllerMade {
                    kind,
                    id: arn.clone(),
                    name: name.clone(),
                    fronts: fronts(pairs),
                });
            }
        }
        Ok(out)
    };
    let (mut out, groups) = futures::try_join!(tagged, groups)?;
    out.controller.extend(groups);
    Ok(out)
}

// ---------------------------------------------------------------- managed collections

/// The state's objects of one kind: address, id and recorded attributes.
fn managed<'s>(
    scope: &'s DiscoverScope<'_>,
    kind: &'s str,
) -> impl Iterator<Item = (&'s Address, &'s crate::resource::Live)> + 's {
    scope
        .managed
        .iter()
        .filter(move |(a, _)| a.kind() == kind)
        .map(|(a, l)| (a, l))
}

/// The ids the state tracks for one kind.
fn ids_of<'s>(scope: &'s DiscoverScope<'_>, kind: &'s str) -> BTreeSet<&'s str> {
    managed(scope, kind).map(|(_, l)| l.id.as_str()).collect()
}

/// Whether the state tracks `id` (a security-group rule's id lists every
/// rule it stands for).
fn known(scope: &DiscoverScope<'_>, id: &str) -> bool {
    scope.known.contains(id)
}

async fn extras(aws: &Aws, scope: &DiscoverScope<'_>) -> Result<Vec<Extra>, ProviderError> {
    let (rules, roles, routes, cluster) = futures::join!(
        group_rules(aws, scope),
        role_policies(aws, scope),
        route_tables(aws, scope),
        cluster_members(aws, scope),
    );
    let mut errors = Vec::new();
    let found = [
        ok_or_note(rules, &mut errors),
        ok_or_note(roles, &mut errors),
        ok_or_note(routes, &mut errors),
        ok_or_note(cluster, &mut errors),
    ];
    match combined(errors) {
        Some(e) => Err(e),
        None => Ok(found.into_iter().flatten().collect()),
    }
}

/// Rules of managed security groups that no `aws.security_group_rule`
/// stands for, besides the egress rule AWS gives every new group.
async fn group_rules(aws: &Aws, scope: &DiscoverScope<'_>) -> Result<Vec<Extra>, ProviderError> {
    let groups: BTreeMap<&str, &Address> = managed(scope, "security_group")
        .map(|(a, l)| (l.id.as_str(), a))
        .collect();
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let at = probe();
    let mut out = Vec::new();
    let mut pages = aws
        .ec2
        .describe_security_group_rules()
        .filters(filter("group-id", groups.keys().map(|g| g.to_string())))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sdk_error(&at, "DescribeSecurityGroupRules", &e))?;
        for r in page.security_group_rules() {
            let (Some(id), Some(group)) = (r.security_group_rule_id(), r.group_id()) else {
                continue;
            };
            let Some(of) = groups.get(group) else {
                continue;
            };
            let egress = r.is_egress().unwrap_or(false);
            let default_egress = egress
                && r.ip_protocol() == Some("-1")
                && r.cidr_ipv4() == Some("0.0.0.0/0")
                && r.description().is_none_or(str::is_empty);
            if known(scope, id) || default_egress {
                continue;
            }
            out.push(Extra {
                of: (*of).clone(),
                collection: "rules".to_string(),
                id: id.to_string(),
                detail: json!({
                    "type": if egress { "egress" } else { "ingress" },
                    "protocol": r.ip_protocol(),
                    "from_port": r.from_port(),
                    "to_port": r.to_port(),
                    "cidr_ipv4": r.cidr_ipv4(),
                    "cidr_ipv6": r.cidr_ipv6(),
                    "source_security_group_id": r.referenced_group_info().and_then(|g| g.group_id()),
                    "prefix_list_id": r.prefix_list_id(),
                    "description": r.description(),
                }),
            });
        }
    }
    Ok(out)
}

/// Policies attached to, and inline policies of, managed roles that no
/// `aws.iam_role_policy_attachment` or `aws.iam_role_policy` stands for.
async fn role_policies(aws: &Aws, scope: &DiscoverScope<'_>) -> Result<Vec<Extra>, ProviderError> {
    let roles: Vec<(&Address, &str)> = managed(scope, "iam_role")
        .map(|(a, l)| (a, l.id.as_str()))
        .collect();
    let found = each(roles, |(addr, name)| async move {
        let mut out = Vec::new();
        let Some(attached) = absent_ok(
            addr,
            "ListAttachedRolePolicies",
            aws.iam
                .list_attached_role_policies()
                .role_name(name)
                .send()
                .await,
        )?
        else {
            return Ok(Some(out));
        };
        for p in attached.attached_policies() {
            let Some(arn) = p.policy_arn() else { continue };
            if !known(scope, &format!("{name}/{arn}")) {
                out.push(Extra {
                    of: addr.clone(),
                    collection: "attached_policies".to_string(),
                    id: arn.to_string(),
                    detail: json!({"policy_arn": arn, "policy_name": p.policy_name()}),
                });
            }
        }
        if let Some(inline) = absent_ok(
            addr,
            "ListRolePolicies",
            aws.iam.list_role_policies().role_name(name).send().await,
        )? {
            for p in inline.policy_names() {
                if !known(scope, &format!("{name}:{p}")) {
                    out.push(Extra {
                        of: addr.clone(),
                        collection: "inline_policies".to_string(),
                        id: p.to_string(),
                        detail: json!({"name": p}),
                    });
                }
            }
        }
        Ok(Some(out))
    })
    .await?;
    Ok(found.into_iter().flatten().collect())
}

/// Routes and subnet associations of managed route tables that no
/// `aws.route` or `aws.route_table_association` stands for (the table's
/// own `local` route is part of it).
async fn route_tables(aws: &Aws, scope: &DiscoverScope<'_>) -> Result<Vec<Extra>, ProviderError> {
    let tables: BTreeMap<&str, &Address> = managed(scope, "route_table")
        .map(|(a, l)| (l.id.as_str(), a))
        .collect();
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let at = probe();
    let found = aws
        .ec2
        .describe_route_tables()
        .filters(filter(
            "route-table-id",
            tables.keys().map(|t| t.to_string()),
        ))
        .send()
        .await
        .map_err(|e| sdk_error(&at, "DescribeRouteTables", &e))?;
    let mut out = Vec::new();
    for t in found.route_tables() {
        let Some(table) = t.route_table_id() else {
            continue;
        };
        let Some(of) = tables.get(table) else {
            continue;
        };
        for r in t.routes() {
            if r.gateway_id() == Some("local")
                || r.origin().is_some_and(|o| o.as_str() == "CreateRouteTable")
            {
                continue;
            }
            let Some(dest) = r
                .destination_cidr_block()
                .or(r.destination_ipv6_cidr_block())
                .or(r.destination_prefix_list_id())
            else {
                continue;
            };
            if known(scope, &super::network::route_id(table, dest)) {
                continue;
            }
            let target = r
                .gateway_id()
                .or(r.nat_gateway_id())
                .or(r.transit_gateway_id())
                .or(r.vpc_peering_connection_id())
                .or(r.network_interface_id())
                .or(r.instance_id());
            out.push(Extra {
                of: (*of).clone(),
                collection: "routes".to_string(),
                id: dest.to_string(),
                detail: json!({"destination": dest, "target": target, "state": r.state().map(|s| s.as_str())}),
            });
        }
        for a in t.associations() {
            let Some(id) = a.route_table_association_id() else {
                continue;
            };
            if a.main() == Some(true) || known(scope, id) {
                continue;
            }
            out.push(Extra {
                of: (*of).clone(),
                collection: "associations".to_string(),
                id: id.to_string(),
                detail: json!({"subnet_id": a.subnet_id(), "gateway_id": a.gateway_id()}),
            });
        }
    }
    Ok(out)
}

/// How long after the cluster EKS makes its creator's access entry, at most
/// (for a cluster whose creator the state does not record: imported).
const CREATOR_ENTRY_WINDOW_SECS: i64 = 120;

/// Whether `principal` (an access entry's, `arn:…:iam::ACCOUNT:role/NAME`)
/// is the identity `caller` (as STS names it: an assumed role's session
/// ARN, or a user's ARN) — EKS records an assumed role as its role.
fn same_principal(caller: &str, principal: &str) -> bool {
    fn parts(arn: &str) -> Option<(&str, &str, &str)> {
        let mut f = arn.splitn(6, ':');
        let (_, _, _, _, account, resource) = (
            f.next()?,
            f.next()?,
            f.next()?,
            f.next()?,
            f.next()?,
            f.next()?,
        );
        let (kind, rest) = resource.split_once('/')?;
        let name = match kind {
            "assumed-role" => rest.split('/').next()?,
            _ => rest.rsplit('/').next()?,
        };
        let kind = if kind == "assumed-role" { "role" } else { kind };
        Some((account, kind, name))
    }
    parts(caller).is_some() && parts(caller) == parts(principal)
}

/// Fargate profiles and access entries of the managed cluster that the
/// state does not know, besides those EKS makes itself: the creator's
/// admin entry (made with the cluster) and the entries of the managed
/// profiles' pod execution roles.
async fn cluster_members(
    aws: &Aws,
    scope: &DiscoverScope<'_>,
) -> Result<Vec<Extra>, ProviderError> {
    let mut out = Vec::new();
    let pod_roles: BTreeSet<&str> = managed(scope, "eks_fargate_profile")
        .filter_map(|(_, l)| {
            l.attrs
                .get("pod_execution_role_arn")
                .and_then(Value::as_str)
        })
        .collect();
    for (addr, live) in managed(scope, "eks_cluster") {
        let cluster = live.id.as_str();
        // The cluster (its creation time), its profiles and its entries at
        // once; a cluster gone meanwhile has none, whatever the lists said.
        let describe = async {
            absent_ok(
                addr,
                "DescribeCluster",
                aws.eks.describe_cluster().name(cluster).send().await,
            )
        };
        let profiles = async {
            let mut profiles = Vec::new();
            let mut pages = aws
                .eks
                .list_fargate_profiles()
                .cluster_name(cluster)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| sdk_error(addr, "ListFargateProfiles", &e))?;
                profiles.extend(page.fargate_profile_names().iter().cloned());
            }
            Ok::<_, ProviderError>(profiles)
        };
        let principals = async {
            let mut principals = Vec::new();
            let mut pages = aws
                .eks
                .list_access_entries()
                .cluster_name(cluster)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| sdk_error(addr, "ListAccessEntries", &e))?;
                principals.extend(page.access_entries().iter().cloned());
            }
            Ok::<_, ProviderError>(principals)
        };
        let (described, profiles, principals) = futures::join!(describe, profiles, principals);
        let Some(described) = described? else {
            continue;
        };
        let (profiles, principals) = (profiles?, principals?);
        let created = described
            .cluster()
            .and_then(|c| c.created_at())
            .map(aws_sdk_eks::primitives::DateTime::secs);
        let creator = live.attrs.get("creator_arn").and_then(Value::as_str);
        for name in profiles {
            if !known(scope, &format!("{cluster}/{name}")) {
                out.push(Extra {
                    of: addr.clone(),
                    collection: "fargate_profiles".to_string(),
                    id: name.clone(),
                    detail: json!({"name": name}),
                });
            }
        }
        let unknown: Vec<String> = principals
            .into_iter()
            .filter(|p| !known(scope, &format!("{cluster}/{p}")) && !pod_roles.contains(p.as_str()))
            .filter(|p| !creator.is_some_and(|c| same_principal(c, p)))
            .collect();
        let entries = each(unknown, |principal| async move {
            let Some(e) = absent_ok(
                addr,
                "DescribeAccessEntry",
                aws.eks
                    .describe_access_entry()
                    .cluster_name(cluster)
                    .principal_arn(&principal)
                    .send()
                    .await,
            )?
            .and_then(|o| o.access_entry().cloned()) else {
                return Ok(None);
            };
            let at = e.created_at().map(aws_sdk_eks::primitives::DateTime::secs);
            let by_creator = creator.is_none()
                && e.r#type() == Some("STANDARD")
                && matches!((created, at), (Some(c), Some(a)) if (a - c).abs() <= CREATOR_ENTRY_WINDOW_SECS);
            Ok((!by_creator).then(|| Extra {
                of: addr.clone(),
                collection: "access_entries".to_string(),
                id: principal.clone(),
                detail: json!({
                    "principal_arn": principal,
                    "type": e.r#type(),
                    "kubernetes_groups": e.kubernetes_groups(),
                    "username": e.username(),
                }),
            }))
        })
        .await?;
        out.extend(entries);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_needs_the_stack_tag_and_names_its_address_or_a_made_one() {
        let tags = [
            ("slipway:stack", "s"),
            ("slipway:address", "aws.iam_role.jenkins"),
        ];
        let t = claim("s", "iam_role", "s-jenkins", tags.iter().copied()).unwrap();
        assert_eq!(t.addr.to_string(), "aws.iam_role.jenkins");
        assert!(t.claims_address);
        assert!(claim("other", "iam_role", "x", tags.iter().copied()).is_none());
        let bare = [("slipway:stack", "s")];
        let t = claim("s", "iam_role", "a+b@c", bare.iter().copied()).unwrap();
        assert_eq!(t.addr.to_string(), "aws.iam_role.a_b_c");
        assert!(!t.claims_address);
        assert_eq!(t.id, "a+b@c");
    }

    #[test]
    fn the_creator_is_known_by_account_kind_and_name() {
        let role = "arn:aws:iam::111122223333:role/ci/deployer";
        assert!(same_principal(
            "arn:aws:sts::111122223333:assumed-role/deployer/jenkins-42",
            role
        ));
        assert!(!same_principal(
            "arn:aws:sts::999922223333:assumed-role/deployer/x",
            role
        ));
        assert!(same_principal(
            "arn:aws:iam::111122223333:user/alice",
            "arn:aws:iam::111122223333:user/alice"
        ));
        assert!(!same_principal(
            "arn:aws:iam::111122223333:user/deployer",
            role
        ));
        assert!(!same_principal("", role));
    }

    #[test]
    fn controller_objects_front_an_ingress_a_group_or_a_service() {
        let f = |k: &'static str, v: &'static str| fronts([(k, v)].into_iter());
        assert_eq!(
            f("ingress.k8s.aws/stack", "ns/web"),
            Some(Fronts::Ingress("ns/web".into()))
        );
        assert_eq!(
            f("ingress.k8s.aws/stack", "shared"),
            Some(Fronts::IngressGroup("shared".into()))
        );
        assert_eq!(
            f("service.k8s.aws/stack", "ns/api"),
            Some(Fronts::Service("ns/api".into()))
        );
        assert_eq!(f("elbv2.k8s.aws/cluster", "c"), None);
    }
}
