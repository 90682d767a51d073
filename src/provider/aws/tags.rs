//! Tags: how slipway marks what it owns, finds interrupted creations and
//! discovers orphans.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use serde_json::{Map, Value};

use super::Aws;
use super::error::sdk_error;
use crate::addr::Address;
use crate::provider::{ProviderError, Tagged};
use crate::resource::{Attrs, Live};

pub const STACK_TAG: &str = "slipway:stack";
pub const ADDRESS_TAG: &str = "slipway:address";

/// The desired `tags` attribute as pairs.
pub fn desired(attrs: &Attrs) -> Vec<(String, String)> {
    attrs
        .get("tags")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Tags as read from AWS, as the attribute value; `aws:` tags belong to AWS
/// and are left out.
pub fn to_value<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
    let map: Map<String, Value> = pairs
        .into_iter()
        .filter(|(k, _)| !k.starts_with("aws:"))
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    Value::Object(map)
}

pub fn ec2_tags(attrs: &Attrs) -> Vec<Tag> {
    desired(attrs)
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

pub fn ec2_value(tags: &[Tag]) -> Value {
    to_value(
        tags.iter()
            .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())),
    )
}

pub fn spec(resource_type: ResourceType, attrs: &Attrs) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource_type)
        .set_tags(Some(ec2_tags(attrs)))
        .build()
}

/// Filters that find the object slipway created for `addr` in this stack.
pub fn owner_filters(aws: &Aws, addr: &Address) -> Vec<Filter> {
    vec![
        Filter::builder()
            .name(format!("tag:{STACK_TAG}"))
            .values(&aws.stack)
            .build(),
        Filter::builder()
            .name(format!("tag:{ADDRESS_TAG}"))
            .values(addr.to_string())
            .build(),
    ]
}

pub fn filter(name: &str, values: impl IntoIterator<Item = impl Into<String>>) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.into_iter().map(Into::into).collect()))
        .build()
}

/// How an object's tags must change to match the stack.
pub struct TagChange {
    /// Every desired tag.
    pub want: BTreeMap<String, String>,
    /// Desired tags that are missing or have another value.
    pub changed: BTreeMap<String, String>,
    /// Keys to remove.
    pub remove: Vec<String>,
}

/// The change from the tags read (`prior`, the `tags` attribute) to the
/// stack's; `None` when they already match.
pub fn change(prior: Option<&Value>, attrs: &Attrs) -> Option<TagChange> {
    let want: BTreeMap<String, String> = desired(attrs).into_iter().collect();
    let have: BTreeMap<String, String> = prior
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    if want == have {
        return None;
    }
    let changed = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let remove = have
        .keys()
        .filter(|k| !want.contains_key(*k))
        .cloned()
        .collect();
    Some(TagChange {
        want,
        changed,
        remove,
    })
}

/// Brings an EC2 object's tags to the desired set: adds and changes in one
/// call, removes in another, leaves `aws:` tags alone.
pub async fn sync_ec2(
    aws: &Aws,
    addr: &Address,
    id: &str,
    prior: Option<&Value>,
    attrs: &Attrs,
) -> Result<(), ProviderError> {
    let Some(change) = change(prior, attrs) else {
        return Ok(());
    };
    if !change.changed.is_empty() {
        let set: Vec<Tag> = change
            .changed
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        aws.ec2
            .create_tags()
            .resources(id)
            .set_tags(Some(set))
            .send()
            .await
            .map_err(|e| sdk_error(addr, "CreateTags", &e))?;
    }
    if !change.remove.is_empty() {
        let remove: Vec<Tag> = change
            .remove
            .iter()
            .map(|k| Tag::builder().key(k).build())
            .collect();
        aws.ec2
            .delete_tags()
            .resources(id)
            .set_tags(Some(remove))
            .send()
            .await
            .map_err(|e| sdk_error(addr, "DeleteTags", &e))?;
    }
    Ok(())
}

/// The slipway kind of an EC2 resource type, as `DescribeTags` names it.
fn kind_of(resource_type: &str) -> String {
    match resource_type {
        // moto says `vpc-elastic-ip`.
        "elastic-ip" | "vpc-elastic-ip" => "eip".to_string(),
        "natgateway" => "nat_gateway".to_string(),
        "volume" => "ebs_volume".to_string(),
        other => other.replace('-', "_"),
    }
}

/// EC2 objects tagged as this stack's whose ids the state does not know,
/// confirmed to still exist, each with the address it claims — two claiming
/// one address are both kept.
pub async fn discover_ec2(
    aws: &Aws,
    stack: &str,
    known: &BTreeSet<String>,
) -> Result<Vec<Tagged>, ProviderError> {
    let probe = Address::domain_wide(crate::addr::Domain::Aws);
    // Each candidate's kind, by id.
    let mut candidates: BTreeMap<String, String> = BTreeMap::new();
    let mut token = None;
    loop {
        let page = aws
            .ec2
            .describe_tags()
            .filters(filter("key", [STACK_TAG]))
            .filters(filter("value", [stack]))
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| sdk_error(&probe, "DescribeTags", &e))?;
        for t in page.tags() {
            let kind = t.resource_type().map(|r| kind_of(r.as_str()));
            if let (Some(id), Some(kind)) =
                (t.resource_id().filter(|id| !known.contains(*id)), kind)
            {
                candidates.insert(id.to_string(), kind);
            }
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    // The addresses they claim, from the address tag; beside that, whether
    // each still exists.
    let ids: Vec<String> = candidates.keys().cloned().collect();
    let claimed = async {
        let mut claimed: BTreeMap<String, Address> = BTreeMap::new();
        for chunk in ids.chunks(200) {
            let page = aws
                .ec2
                .describe_tags()
                .filters(filter("key", [ADDRESS_TAG]))
                .filters(filter("resource-id", chunk.to_vec()))
                .send()
                .await
                .map_err(|e| sdk_error(&probe, "DescribeTags", &e))?;
            for t in page.tags() {
                if let (Some(id), Some(Ok(addr))) =
                    (t.resource_id(), t.value().map(str::parse::<Address>))
                {
                    claimed.insert(id.to_string(), addr);
                }
            }
        }
        Ok::<_, ProviderError>(claimed)
    };
    // Tags outlive some objects for a while (terminated instances, deleted
    // NAT gateways): keep only those a read of their own type still finds.
    // Each is read under an address of its own, so two claiming one address
    // both stay.
    let mut by_kind: BTreeMap<&str, Vec<(Address, Live)>> = BTreeMap::new();
    for (id, kind) in &candidates {
        let Some(own) = super::inventory::synthetic(kind, id) else {
            continue;
        };
        by_kind.entry(kind.as_str()).or_default().push((
            own,
            Live {
                id: id.clone(),
                attrs: Attrs::new(),
            },
        ));
    }
    let mut reads = Vec::new();
    for (kind, items) in by_kind {
        let probe = &probe;
        reads.push(async move {
            let live = match kind {
                "vpc" => super::network::read_vpcs(aws, &items).await?,
                "internet_gateway" => super::network::read_igws(aws, &items).await?,
                "subnet" => super::network::read_subnets(aws, &items).await?,
                "eip" => super::network::read_eips(aws, &items).await?,
                "nat_gateway" => super::network::read_nats(aws, &items).await?,
                "route_table" => super::network::read_route_tables(aws, &items).await?,
                "security_group" => super::security::read_groups(aws, &items).await?,
                "security_group_rule" => super::security::read_rules(aws, &items).await?,
                "instance" => super::instance::read(aws, &items).await?,
                "ebs_volume" => detached_volumes(aws, probe, items, known).await?,
                // Kinds slipway makes none of (snapshots, images…): their
                // tags say they exist.
                _ => items.into_iter().collect(),
            };
            Ok::<_, ProviderError>((kind, live))
        });
    }
    let (claimed, found) = futures::try_join!(claimed, futures::future::try_join_all(reads))?;
    let mut out = Vec::new();
    for (kind, live) in found {
        for (own, l) in live {
            // A copy of an object's tags on another type (a snapshot of an
            // instance) claims nothing: it is reported as what it is.
            let claim = claimed.get(&l.id).filter(|a| a.kind() == kind).cloned();
            out.push(Tagged {
                claims_address: claim.is_some(),
                addr: claim.unwrap_or(own),
                id: l.id,
            });
        }
    }
    Ok(out)
}

/// The volumes among `items` that exist and are attached to no instance the
/// state tracks: a tracked instance's volumes carry its tags and are part
/// of it.
async fn detached_volumes(
    aws: &Aws,
    probe: &Address,
    items: Vec<(Address, Live)>,
    known: &BTreeSet<String>,
) -> Result<BTreeMap<Address, Live>, ProviderError> {
    let ids: Vec<String> = items.iter().map(|(_, l)| l.id.clone()).collect();
    let mut keep: BTreeSet<String> = BTreeSet::new();
    for chunk in ids.chunks(200) {
        let mut pages = aws
            .ec2
            .describe_volumes()
            .filters(filter("volume-id", chunk.to_vec()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error(probe, "DescribeVolumes", &e))?;
            for v in page.volumes() {
                let part_of_known = v
                    .attachments()
                    .iter()
                    .any(|a| a.instance_id().is_some_and(|i| known.contains(i)));
                if let Some(id) = v.volume_id().filter(|_| !part_of_known) {
                    keep.insert(id.to_string());
                }
            }
        }
    }
    Ok(items
        .into_iter()
        .filter(|(_, l)| keep.contains(&l.id))
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn change_lists_what_to_set_and_remove_and_nothing_when_equal() {
        let desired: Attrs = [("tags".to_string(), json!({"a": "1", "b": "2"}))].into();
        let c = change(Some(&json!({"a": "1", "b": "old", "gone": "x"})), &desired).unwrap();
        assert_eq!(c.changed, [("b".to_string(), "2".to_string())].into());
        assert_eq!(c.remove, ["gone"]);
        assert_eq!(c.want.len(), 2);
        assert!(change(Some(&json!({"a": "1", "b": "2"})), &desired).is_none());
        let added = change(None, &desired).unwrap();
        assert_eq!(added.changed.len(), 2);
        assert!(added.remove.is_empty());
    }
}
