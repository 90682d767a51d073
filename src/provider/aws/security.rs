//! Security groups and their rules. A rule resource is one permission (a
//! protocol and port range from a set of CIDR blocks or from another group);
//! EC2 stores it as one security group rule per source, whose ids together
//! are the resource's id.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{IpPermission, IpRange, ResourceType, SecurityGroupRule, UserIdGroupPair};
use serde_json::json;

use super::error::{code_of, invalid, sdk_error};
use super::tags::{self, filter, owner_filters};
use super::{Aws, batch_addr, i, live, s, s_opt, strings};
use crate::addr::Address;
use crate::provider::{OpContext, ProviderError};
use crate::resource::{Attrs, Live};

type Found = Result<BTreeMap<Address, Live>, ProviderError>;

pub async fn read_groups(aws: &Aws, items: &[(Address, Live)]) -> Found {
    let at = batch_addr(items);
    let ids: Vec<String> = items.iter().map(|(_, l)| l.id.clone()).collect();
    let out = aws
        .ec2
        .describe_security_groups()
        .filters(filter("group-id", ids))
        .send()
        .await
        .map_err(|e| sdk_error(&at, "DescribeSecurityGroups", &e))?;
    let mut found = BTreeMap::new();
    for g in out.security_groups() {
        let id = g.group_id().unwrap_or_default();
        for (a, prior) in items {
            if prior.id == id {
                found.insert(
                    a.clone(),
                    live(
                        id,
                        [
                            ("id", json!(id)),
                            ("arn", json!(g.security_group_arn())),
                            ("name", json!(g.group_name())),
                            ("description", json!(g.description())),
                            ("vpc_id", json!(g.vpc_id())),
                            ("tags", tags::ec2_value(g.tags())),
                        ],
                    ),
                );
            }
        }
    }
    Ok(found)
}

pub async fn create_group(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let owned = aws
        .ec2
        .describe_security_groups()
        .set_filters(Some(owner_filters(aws, addr)))
        .send()
        .await
        .map_err(|e| sdk_error(addr, "DescribeSecurityGroups", &e))?;
    // Not the group being replaced: it carries the same tags until it goes.
    let id = match owned
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id())
        .find(|id| ctx.replacing_opt() != Some(*id))
    {
        Some(id) => id.to_string(),
        None => {
            let out = aws
                .retry_consistency(ctx, &["InvalidVpcID.NotFound"], || async {
                    aws.ec2
                        .create_security_group()
                        .group_name(s(addr, desired, "name")?)
                        .description(s(addr, desired, "description")?)
                        .vpc_id(s(addr, desired, "vpc_id")?)
                        .tag_specifications(tags::spec(ResourceType::SecurityGroup, desired))
                        .send()
                        .await
                        .map_err(|e| sdk_error(addr, "CreateSecurityGroup", &e))
                })
                .await?;
            out.group_id()
                .ok_or_else(|| invalid(addr, "CreateSecurityGroup returned no group id"))?
                .to_string()
        }
    };
    read_one_group(aws, addr, &id).await
}

async fn read_one_group(aws: &Aws, addr: &Address, id: &str) -> Result<Live, ProviderError> {
    let items = [(
        addr.clone(),
        Live {
            id: id.to_string(),
            attrs: Attrs::new(),
        },
    )];
    read_groups(aws, &items).await?.remove(addr).ok_or_else(|| {
        ProviderError::new(
            addr,
            "NotFound",
            format!("security group `{id}` cannot be read back"),
            true,
        )
    })
}

pub async fn update_group(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    desired: &Attrs,
    _ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    tags::sync_ec2(aws, addr, &prior.id, prior.attrs.get("tags"), desired).await?;
    read_one_group(aws, addr, &prior.id).await
}

/// The rule resource as EC2 rules, from the rules whose ids are in `id`.
fn rule_live(id_list: &[String], rules: &[&SecurityGroupRule]) -> Option<Live> {
    let mine: Vec<&&SecurityGroupRule> = rules
        .iter()
        .filter(|r| {
            r.security_group_rule_id()
                .is_some_and(|id| id_list.iter().any(|x| x == id))
        })
        .collect();
    let first = mine.first()?;
    let ids: Vec<String> = mine
        .iter()
        .filter_map(|r| r.security_group_rule_id().map(str::to_string))
        .collect();
    let id = ids.join(",");
    let mut attrs = vec![
        ("id", json!(id)),
        ("security_group_id", json!(first.group_id())),
        (
            "type",
            json!(if first.is_egress().unwrap_or(false) {
                "egress"
            } else {
                "ingress"
            }),
        ),
        ("protocol", json!(first.ip_protocol())),
        ("from_port", json!(first.from_port())),
        ("to_port", json!(first.to_port())),
    ];
    if let Some(d) = first.description() {
        attrs.push(("description", json!(d)));
    }
    attrs.push(("tags", tags::ec2_value(first.tags())));
    let cidrs: Vec<&str> = mine.iter().filter_map(|r| r.cidr_ipv4()).collect();
    if !cidrs.is_empty() {
        attrs.push(("cidr_blocks", json!(cidrs)));
    }
    if let Some(g) = first.referenced_group_info().and_then(|g| g.group_id()) {
        attrs.push(("source_security_group_id", json!(g)));
    }
    Some(live(&id, attrs))
}

fn id_list(id: &str) -> Vec<String> {
    id.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

pub async fn read_rules(aws: &Aws, items: &[(Address, Live)]) -> Found {
    let at = batch_addr(items);
    let all_ids: Vec<String> = items.iter().flat_map(|(_, l)| id_list(&l.id)).collect();
    let out = aws
        .ec2
        .describe_security_group_rules()
        .filters(filter("security-group-rule-id", all_ids))
        .send()
        .await
        .map_err(|e| sdk_error(&at, "DescribeSecurityGroupRules", &e))?;
    let rules: Vec<&SecurityGroupRule> = out.security_group_rules().iter().collect();
    let mut found = BTreeMap::new();
    for (a, prior) in items {
        if let Some(l) = rule_live(&id_list(&prior.id), &rules) {
            found.insert(a.clone(), l);
        }
    }
    Ok(found)
}

fn permission(addr: &Address, desired: &Attrs) -> Result<IpPermission, ProviderError> {
    let mut p = IpPermission::builder()
        .ip_protocol(s(addr, desired, "protocol")?)
        .set_from_port(i(desired, "from_port").and_then(|v| i32::try_from(v).ok()))
        .set_to_port(i(desired, "to_port").and_then(|v| i32::try_from(v).ok()));
    let description = s_opt(desired, "description").map(str::to_string);
    for cidr in strings(desired, "cidr_blocks") {
        p = p.ip_ranges(
            IpRange::builder()
                .cidr_ip(cidr)
                .set_description(description.clone())
                .build(),
        );
    }
    if let Some(g) = s_opt(desired, "source_security_group_id") {
        p = p.user_id_group_pairs(
            UserIdGroupPair::builder()
                .group_id(g)
                .set_description(description.clone())
                .build(),
        );
    }
    Ok(p.build())
}

async fn authorize(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Vec<String>, ProviderError> {
    let group = s(addr, desired, "security_group_id")?;
    let perm = permission(addr, desired)?;
    let spec = tags::spec(ResourceType::SecurityGroupRule, desired);
    let egress = s_opt(desired, "type") == Some("egress");
    let rules = aws
        .retry_consistency(ctx, &["InvalidGroup.NotFound"], || async {
            if egress {
                aws.ec2
                    .authorize_security_group_egress()
                    .group_id(group)
                    .ip_permissions(perm.clone())
                    .tag_specifications(spec.clone())
                    .send()
                    .await
                    .map(|o| {
                        o.security_group_rules()
                            .iter()
                            .filter_map(|r| r.security_group_rule_id().map(str::to_string))
                            .collect::<Vec<_>>()
                    })
                    .map_err(|e| sdk_error(addr, "AuthorizeSecurityGroupEgress", &e))
            } else {
                aws.ec2
                    .authorize_security_group_ingress()
                    .group_id(group)
                    .ip_permissions(perm.clone())
                    .tag_specifications(spec.clone())
                    .send()
                    .await
                    .map(|o| {
                        o.security_group_rules()
                            .iter()
                            .filter_map(|r| r.security_group_rule_id().map(str::to_string))
                            .collect::<Vec<_>>()
                    })
                    .map_err(|e| sdk_error(addr, "AuthorizeSecurityGroupIngress", &e))
            }
        })
        .await?;
    Ok(rules)
}

async fn owned_rule_ids(aws: &Aws, addr: &Address) -> Result<Vec<String>, ProviderError> {
    let out = aws
        .ec2
        .describe_security_group_rules()
        .set_filters(Some(owner_filters(aws, addr)))
        .send()
        .await
        .map_err(|e| sdk_error(addr, "DescribeSecurityGroupRules", &e))?;
    Ok(out
        .security_group_rules()
        .iter()
        .filter_map(|r| r.security_group_rule_id().map(str::to_string))
        .collect())
}

async fn read_rule(aws: &Aws, addr: &Address, ids: Vec<String>) -> Result<Live, ProviderError> {
    let prior = Live {
        id: ids.join(","),
        attrs: Attrs::new(),
    };
    read_rules(aws, &[(addr.clone(), prior)])
        .await?
        .remove(addr)
        .ok_or_else(|| {
            ProviderError::new(
                addr,
                "NotFound",
                "the rules just authorized cannot be read back",
                true,
            )
        })
}

pub async fn create_rule(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let owned = owned_rule_ids(aws, addr).await?;
    if !owned.is_empty() {
        let prior = read_rule(aws, addr, owned).await?;
        return update_rule(aws, addr, &prior, desired, ctx).await;
    }
    let ids = authorize(aws, addr, desired, ctx).await?;
    read_rule(aws, addr, ids).await
}

/// EC2 rules are replaced rule by rule: the old ones are revoked, then the
/// new permission is authorized (authorizing first would collide with the
/// unchanged sources).
pub async fn update_rule(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    if prior.attrs.get("cidr_blocks") == desired.get("cidr_blocks")
        && prior.attrs.get("source_security_group_id") == desired.get("source_security_group_id")
        && prior.attrs.get("from_port") == desired.get("from_port")
        && prior.attrs.get("to_port") == desired.get("to_port")
        && prior.attrs.get("protocol") == desired.get("protocol")
        && prior.attrs.get("description") == desired.get("description")
    {
        for id in id_list(&prior.id) {
            tags::sync_ec2(aws, addr, &id, prior.attrs.get("tags"), desired).await?;
        }
        return read_rule(aws, addr, id_list(&prior.id)).await;
    }
    revoke(aws, addr, prior).await?;
    let ids = authorize(aws, addr, desired, ctx).await?;
    read_rule(aws, addr, ids).await
}

async fn revoke(aws: &Aws, addr: &Address, prior: &Live) -> Result<(), ProviderError> {
    let ids = id_list(&prior.id);
    let Some(group) = s_opt(&prior.attrs, "security_group_id") else {
        return Ok(());
    };
    if ids.is_empty() {
        return Ok(());
    }
    let egress = s_opt(&prior.attrs, "type") == Some("egress");
    let result = if egress {
        aws.ec2
            .revoke_security_group_egress()
            .group_id(group)
            .set_security_group_rule_ids(Some(ids))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                (
                    code_of(&e).map(str::to_string),
                    sdk_error(addr, "RevokeSecurityGroupEgress", &e),
                )
            })
    } else {
        aws.ec2
            .revoke_security_group_ingress()
            .group_id(group)
            .set_security_group_rule_ids(Some(ids))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                (
                    code_of(&e).map(str::to_string),
                    sdk_error(addr, "RevokeSecurityGroupIngress", &e),
                )
            })
    };
    match result {
        Ok(()) => Ok(()),
        Err((Some(code), _)) if code.ends_with("NotFound") => Ok(()),
        Err((_, e)) => Err(e),
    }
}

pub async fn delete(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    ctx: &OpContext<'_>,
) -> Result<(), ProviderError> {
    if addr.kind() == "security_group_rule" {
        return revoke(aws, addr, prior).await;
    }

    aws.retry_consistency(ctx, &["DependencyViolation"], || async {
        match aws
            .ec2
            .delete_security_group()
            .group_id(&prior.id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if code_of(&e).is_some_and(|c| c.ends_with("NotFound")) => Ok(()),
            Err(e) => Err(sdk_error(addr, "DeleteSecurityGroup", &e)),
        }
    })
    .await
}
