//! VPC, internet gateway, subnets, Elastic IPs, NAT gateways, route tables,
//! routes and route table associations.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    AttributeBooleanValue, ConnectivityType, DomainType, NatGatewayState, ResourceType,
    VpcAttributeName,
};
use serde_json::json;

use super::error::{absent_ok, invalid, sdk_error};
use super::tags::{self, filter, owner_filters};
use super::{Aws, b, batch_addr, live, s, s_opt};
use crate::addr::Address;
use crate::provider::{OpContext, ProviderError};
use crate::resource::{Attrs, Live};

type Found = Result<BTreeMap<Address, Live>, ProviderError>;

/// Codes EC2 answers while a just-created object is not yet visible everywhere.
const NOT_YET_VISIBLE: &[&str] = &[
    "InvalidVpcID.NotFound",
    "InvalidSubnetID.NotFound",
    "InvalidRouteTableID.NotFound",
    "InvalidInternetGatewayID.NotFound",
    "InvalidGatewayID.NotFound",
    "InvalidNatGatewayID.NotFound",
    "InvalidAllocationID.NotFound",
];

fn ids(items: &[(Address, Live)]) -> Vec<String> {
    items.iter().map(|(_, l)| l.id.clone()).collect()
}

/// Matches objects read back to the addresses that asked for them, by id.
fn by_id(items: &[(Address, Live)], found: Vec<Live>) -> BTreeMap<Address, Live> {
    let mut out = BTreeMap::new();
    for l in found {
        for (a, prior) in items {
            if prior.id == l.id {
                out.insert(a.clone(), l.clone());
            }
        }
    }
    out
}

// ---------------------------------------------------------------- VPC

pub async fn read_vpcs(aws: &Aws, items: &[(Address, Live)]) -> Found {
    let at = batch_addr(items);
    let out = aws
        .ec2
        .describe_vpcs()
        .filters(filter("vpc-id", ids(items)))
        .send()
        .await
        .map_err(|e| sdk_error(&at, "DescribeVpcs", &e))?;
    let mut found = Vec::new();
    for v in out.vpcs() {
        let id = v.vpc_id().unwrap_or_default();
        // Two attributes EC2 only reports one call at a time: both at once.
        let attribute = |name: VpcAttributeName| {
            let at = &at;
            async move {
                aws.ec2
                    .describe_vpc_attribute()
                    .vpc_id(id)
                    .attribute(name)
                    .send()
                    .await
                    .map_err(|e| sdk_error(at, "DescribeVpcAttribute", &e))
            }
        };
        let (support, hostnames) = futures::try_join!(
            attribute(VpcAttributeName::EnableDnsSupport),
            attribute(VpcAttributeName::EnableDnsHostnames)
        )?;
        found.push(live(
            id,
            [
                ("id", json!(id)),
                ("cidr_block", json!(v.cidr_block())),
                (
                    "enable_dns_support",
                    json!(
                        support
                            .enable_dns_support()
                            .and_then(|a| a.value())
                            .unwrap_or(false)
                    ),
                ),
                (
                    "enable_dns_hostnames",
                    json!(
                        hostnames
                            .enable_dns_hostnames()
                            .and_then(|a| a.value())
                            .unwrap_or(false)
                    ),
                ),
                ("tags", tags::ec2_value(v.tags())),
            ],
        ));
    }
    Ok(by_id(items, found))
}

async fn find_owned_vpc(aws: &Aws, addr: &Address) -> Result<Option<String>, ProviderError> {
    let out = aws
        .ec2
        .describe_vpcs()
        .set_filters(Some(owner_filters(aws, addr)))
        .send()
        .await
        .map_err(|e| sdk_error(addr, "DescribeVpcs", &e))?;
    Ok(out
        .vpcs()
        .first()
        .and_then(|v| v.vpc_id())
        .map(str::to_string))
}

pub async fn create_vpc(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let (id, made) = match find_owned_vpc(aws, addr).await? {
        Some(id) => (id, false),
        None => {
            let out = aws
                .ec2
                .create_vpc()
                .cidr_block(s(addr, desired, "cidr_block")?)
                .tag_specifications(tags::spec(ResourceType::Vpc, desired))
                .send()
                .await
                .map_err(|e| sdk_error(addr, "CreateVpc", &e))?;
            let id = out
                .vpc()
                .and_then(|v| v.vpc_id())
                .ok_or_else(|| invalid(addr, "CreateVpc returned no VPC id"))?;
            (id.to_string(), true)
        }
    };
    // A VPC just made has DNS support on and DNS hostnames off (AWS's
    // defaults for a VPC that is not the default one): only what differs
    // is changed. One adopted from an interrupted run may differ in either.
    let made_as = Live {
        id: id.clone(),
        attrs: Attrs::from([
            ("enable_dns_support".to_string(), json!(true)),
            ("enable_dns_hostnames".to_string(), json!(false)),
        ]),
    };
    set_vpc_dns(aws, addr, &id, made.then_some(&made_as), desired, ctx).await?;
    let prior = Live {
        id: id.clone(),
        attrs: Attrs::new(),
    };
    reread(aws, addr, &prior).await
}

async fn set_vpc_dns(
    aws: &Aws,
    addr: &Address,
    id: &str,
    prior: Option<&Live>,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<(), ProviderError> {
    for (key, support) in [
        ("enable_dns_support", true),
        ("enable_dns_hostnames", false),
    ] {
        let Some(want) = b(desired, key) else {
            continue;
        };
        if prior.is_some_and(|p| b(&p.attrs, key) == Some(want)) {
            continue;
        }
        let v = AttributeBooleanValue::builder().value(want).build();
        aws.retry_consistency(ctx, NOT_YET_VISIBLE, || async {
            let req = aws.ec2.modify_vpc_attribute().vpc_id(id);
            let req = if support {
                req.enable_dns_support(v.clone())
            } else {
                req.enable_dns_hostnames(v.clone())
            };
            req.send()
                .await
                .map(|_| ())
                .map_err(|e| sdk_error(addr, "ModifyVpcAttribute", &e))
        })
        .await?;
    }
    Ok(())
}

pub async fn update_vpc(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    set_vpc_dns(aws, addr, &prior.id, Some(prior), desired, ctx).await?;
    tags::sync_ec2(aws, addr, &prior.id, prior.attrs.get("tags"), desired).await?;
    reread(aws, addr, prior).await
}

/// Reads the objects of one network kind.
async fn read_kind(aws: &Aws, kind: &str, items: &[(Address, Live)]) -> Found {
    match kind {
        "vpc" => read_vpcs(aws, items).await,
        "internet_gateway" => read_igws(aws, items).await,
        "subnet" => read_subnets(aws, items).await,
        "eip" => read_eips(aws, items).await,
        "nat_gateway" => read_nats(aws, items).await,
        "route_table" => read_route_tables(aws, items).await,
        "route" => read_routes(aws, items).await,
        _ => read_associations(aws, items).await,
    }
}

/// Reads one object back after a change; a new object can take a moment to
/// show up in Describe calls.
async fn reread(aws: &Aws, addr: &Address, prior: &Live) -> Result<Live, ProviderError> {
    let items = [(addr.clone(), prior.clone())];
    let started = tokio::time::Instant::now();
    loop {
        if let Some(l) = read_kind(aws, addr.kind(), &items).await?.remove(addr) {
            return Ok(l);
        }
        if started.elapsed() > aws.timeouts.consistency {
            return Err(ProviderError::new(
                addr,
                "NotFound",
                format!("`{}` was changed but cannot be read back", prior.id),
                true,
            ));
        }
        tokio::time::sleep(aws.poll).await;
    }
}

/// Tags are the only in-place change for these kinds (the rest force a replacement).
pub async fn update_tagged(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    desired: &Attrs,
    _ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    tags::sync_ec2(aws, addr, &prior.id, prior.attrs.get("tags"), desired).await?;
    if addr.kind() == "subnet" {
        set_map_public_ip(aws, addr, &prior.id, Some(prior), desired).await?;
    }
    reread(aws, addr, prior).await
}

// ---------------------------------------------------------------- internet gateway

pub async fn read_igws(aws: &Aws, items: &[(Address, Live)]) -> Found {
    let at = batch_addr(items);
    let out = aws
        .ec2
        .describe_internet_gateways()
        .filters(filter("internet-gateway-id", ids(items)))
        .send()
        .await
        .map_err(|e| sdk_error(&at, "DescribeInternetGateways", &e))?;
    let found = out
        .internet_gateways()
        .iter()
        .map(|g| {
            let id = g.internet_gateway_id().unwrap_or_default();
            let vpc = g.attachments().first().and_then(|a| a.vpc_id());
            live(
                id,
                [
                    ("id", json!(id)),
                    ("vpc_id", json!(vpc)),
                    ("tags", tags::ec2_value(g.tags())),
                ],
            )
        })
        .collect();
    Ok(by_id(items, found))
}

pub async fn create_igw(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let owned = aws
        .ec2
        .describe_internet_gateways()
        .set_filters(Some(owner_filters(aws, addr)))
        .send()
        .await
        .map_err(|e| sdk_error(addr, "DescribeInternetGateways", &e))?;
    let (id, attached) = match owned.internet_gateways().first() {
        Some(g) => (
            g.internet_gateway_id().unwrap_or_default().to_string(),
            g.attachments()
                .first()
                .and_then(|a| a.vpc_id())
                .map(str::to_string),
        ),
        None => {
            let out = aws
                .ec2
                .create_internet_gateway()
                .tag_specifications(tags::spec(ResourceType::InternetGateway, desired))
                .send()
                .await
                .map_err(|e| sdk_error(addr, "CreateInternetGateway", &e))?;
            let id = out
                .internet_gateway()
                .and_then(|g| g.internet_gateway_id())
                .ok_or_else(|| invalid(addr, "CreateInternetGateway returned no id"))?;
            (id.to_string(), None)
        }
    };
    let vpc = s(addr, desired, "vpc_id")?;
    if attached.as_deref() != Some(vpc) {
        aws.retry_consistency(ctx, NOT_YET_VISIBLE, || async {
            aws.ec2
                .attach_internet_gateway()
                .internet_gateway_id(&id)
                .vpc_id(vpc)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| sdk_error(addr, "AttachInternetGateway", &e))
        })
        .await?;
    }
    reread(
        aws,
        addr,
        &Live {
            id,
            attrs: Attrs::new(),
        },
    )
    .await
}

// ---------------------------------------------------------------- subnets

pub async fn read_subnets(aws: &Aws, items: &[(Address, Live)]) -> Found {
    let at = batch_addr(items);
    let out = aws
        .ec2
        .describe_subnets()
        .filters(filter("subnet-id", ids(items)))
        .send()
        .await
        .map_err(|e| sdk_error(&at, "DescribeSubnets", &e))?;
    let found = out
        .subnets()
        .iter()
        .map(|n| {
            let id = n.subnet_id().unwrap_or_default();
            live(
                id,
                [
                    ("id", json!(id)),
                    ("arn", json!(n.subnet_arn())),
                    ("vpc_id", json!(n.vpc_id())),
                    ("cidr_block", json!(n.cidr_block())),
                    ("availability_zone", json!(n.availability_zone())),
                    (
                        "map_public_ip_on_launch",
                        json!(n.map_public_ip_on_launch().unwrap_or(false)),
                    ),
                    ("tags", tags::ec2_value(n.tags())),
                ],
            )
        })
        .collect();
    Ok(by_id(items, found))
}

async fn set_map_public_ip(
    aws: &Aws,
    addr: &Address,
    id: &str,
    prior: Option<&Live>,
    desired: &Attrs,
) -> Result<(), ProviderError> {
    let Some(want) = b(desired, "map_public_ip_on_launch") else {
        return Ok(());
    };
    let have = prior
        .and_then(|p| b(&p.attrs, "map_public_ip_on_launch"))
        .unwrap_or(false);
    if want == have {
        return Ok(());
    }
    aws.ec2
        .modify_subnet_attribute()
        .subnet_id(id)
        .map_public_ip_on_launch(AttributeBooleanValue::builder().value(want).build())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| sdk_error(addr, "ModifySubnetAttribute", &e))
}

pub async fn create_subnet(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let owned = aws
        .ec2
        .describe_subnets()
        .set_filters(Some(owner_filters(aws, addr)))
        .send()
        .await
        .map_err(|e| sdk_error(addr, "DescribeSubnets", &e))?;
    let id = match owned.subnets().first().and_then(|n| n.subnet_id()) {
        Some(id) => id.to_string(),
        None => {
            let out = aws
                .retry_consistency(ctx, NOT_YET_VISIBLE, || async {
                    aws.ec2
                        .create_subnet()
                        .vpc_id(s(addr, desired, "vpc_id")?)
                        .cidr_block(s(addr, desired, "cidr_block")?)
                        .availability_zone(s(addr, desired, "availability_zone")?)
                        .tag_specifications(tags::spec(ResourceType::Subnet, desired))
                        .send()
                        .await
                        .map_err(|e| sdk_error(addr, "CreateSubnet", &e))
                })
                .await?;
            out.subnet()
                .and_then(|n| n.subnet_id())
                .ok_or_else(|| invalid(addr, "CreateSubnet returned no id"))?
                .to_string()
        }
    };
    set_map_public_ip(aws, addr, &id, None, desired).await?;
    reread(
        aws,
        addr,
        &Live {
            id,
            attrs: Attrs::new(),
        },
    )
    .await
}

// ---------------------------------------------------------------- Elastic IPs

pub async fn read_eips(aws: &Aws, items: &[(Address, Live)]) -> Found {
    let found = describe_addresses(aws, items, "allocation-id", ids(items)).await?;
    Ok(eips_found(&found, items))
}

/// The Elastic IPs a filter selects, for the reads of `items`.
async fn describe_addresses(
    aws: &Aws,
    items: &[(Address, Live)],
    name: &str,
    values: Vec<String>,
) -> Result<Vec<aws_sdk_ec2::types::Address>, ProviderError> {
    let at = batch_addr(items);
    let out = aws
        .ec2
        .describe_addresses()
        .filters(filter(name, values))
        .send()
        .await
        .map_err(|e| sdk_error(&at, "DescribeAddresses", &e))?;
    Ok(out.addresses().to_vec())
}

fn eips_found(
    addresses: &[aws_sdk_ec2::types::Address],
    items: &[(Address, Live)],
) -> BTreeMap<Address, Live> {
    let found = addresses
        .iter()
        .map(|a| {
            let id = a.allocation_id().unwrap_or_default();
            live(
                id,
                [
                    ("id", json!(id)),
                    ("domain", json!(a.domain().map(|d| d.as_str()))),
                    ("public_ip", json!(a.public_ip())),
                    ("tags", tags::ec2_value(a.tags())),
                ],
            )
        })
        .collect();
    by_id(items, found)
}

/// Elastic IPs and their associations, read with one DescribeAddresses of
/// every allocation they name: an association belongs to one address (a
/// new association of it gets a new id). Associations recorded without
/// their allocation are read by their own id.
pub async fn read_address_family(
    aws: &Aws,
    eips: &[(Address, Live)],
    associations: &[(Address, Live)],
) -> (Found, Found) {
    let (placed, unplaced): (Vec<_>, Vec<_>) = associations
        .iter()
        .cloned()
        .partition(|(_, l)| s_opt(&l.attrs, "allocation_id").is_some());
    let mut names = ids(eips);
    names.extend(
        placed
            .iter()
            .filter_map(|(_, l)| s_opt(&l.attrs, "allocation_id").map(str::to_string)),
    );
    names.sort();
    names.dedup();
    let all: Vec<(Address, Live)> = eips.iter().chain(&placed).cloned().collect();
    let shared = async {
        if all.is_empty() {
            return Ok(Vec::new());
        }
        describe_addresses(aws, &all, "allocation-id", names).await
    };
    let own = async {
        if unplaced.is_empty() {
            return Ok(BTreeMap::new());
        }
        read_eip_associations(aws, &unplaced).await
    };
    let (shared, own) = futures::join!(shared, own);
    let for_kind =
        |items: &[(Address, Live)]| -> Result<&[aws_sdk_ec2::types::Address], ProviderError> {
            shared.as_deref().map_err(|e| ProviderError {
                addr: batch_addr(items),
                ..e.clone()
            })
        };
    let eips_out = for_kind(eips).map(|a| eips_found(a, eips));
    let associations_out = for_kind(&placed).and_then(|a| {
        let mut found = associations_found_eip(a, &placed);
        found.extend(own?);
        Ok(found)
    });
    (eips_out, associations_out)
}

pub async fn create_eip(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    _ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let owned = aws
        .ec2
        .describe_addresses()
        .set_filters(Some(owner_filters(aws, addr)))
        .send()
        .await
        .map_err(|e| sdk_error(addr, "DescribeAddresses", &e))?;
    let id = match owned.addresses().first().and_then(|a| a.allocation_id()) {
        Some(id) => id.to_string(),
        None => {
            let out = aws
                .ec2
                .allocate_address()
                .domain(DomainType::Vpc)
                .tag_specifications(tags::spec(ResourceType::ElasticIp, desired))
                .send()
                .await
                .map_err(|e| sdk_error(addr, "AllocateAddress", &e))?;
            out.allocation_id()
                .ok_or_else(|| invalid(addr, "AllocateAddress returned no allocation id"))?
                .to_string()
        }
    };
    reread(
        aws,
        addr,
        &Live {
            id,
            attrs: Attrs::new(),
        },
    )
    .await
}

// ---------------------------------------------------------------- Elastic IP associations

fn association_live(a: &aws_sdk_ec2::types::Address) -> Option<Live> {
    let id = a.association_id().filter(|i| !i.is_empty())?;
    Some(live(
        id,
        [
            ("id", json!(id)),
            ("allocation_id", json!(a.allocation_id())),
            ("instance_id", json!(a.instance_id())),
        ],
    ))
}

pub async fn read_eip_associations(aws: &Aws, items: &[(Address, Live)]) -> Found {
    let found = describe_addresses(aws, items, "association-id", ids(items)).await?;
    Ok(associations_found_eip(&found, items))
}

fn associations_found_eip(
    addresses: &[aws_sdk_ec2::types::Address],
    items: &[(Address, Live)],
) -> BTreeMap<Address, Live> {
    by_id(
        items,
        addresses.iter().filter_map(association_live).collect(),
    )
}

/// Associates the Elastic IP with the instance; an address already on that
/// instance is adopted, one on another instance is refused (never moved
/// silently).
pub async fn create_eip_association(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let allocation = s(addr, desired, "allocation_id")?;
    let instance = s(addr, desired, "instance_id")?;
    let describe = || async {
        aws.ec2
            .describe_addresses()
            .allocation_ids(allocation)
            .send()
            .await
            .map_err(|e| sdk_error(addr, "DescribeAddresses", &e))
    };
    let current = describe().await?;
    if let Some(a) = current.addresses().first() {
        // Some EC2-compatible servers answer "" rather than no instance.
        match a.instance_id().filter(|i| !i.is_empty()) {
            Some(i) if i == instance => {
                if let Some(l) = association_live(a) {
                    return Ok(l);
                }
            }
            Some(other) => {
                return Err(ProviderError::new(
                    addr,
                    "AddressInUse",
                    format!(
                        "Elastic IP `{allocation}` is associated with another instance, `{other}`: disassociate it there first (slipway never moves an address off an instance it does not know)"
                    ),
                    false,
                ));
            }
            None => {}
        }
    }
    let out = aws
        .retry_consistency(
            ctx,
            &["InvalidInstanceID", "IncorrectInstanceState"],
            || async {
                aws.ec2
                    .associate_address()
                    .allocation_id(allocation)
                    .instance_id(instance)
                    .allow_reassociation(false)
                    .send()
                    .await
                    .map_err(|e| sdk_error(addr, "AssociateAddress", &e))
            },
        )
        .await?;
    let id = out
        .association_id()
        .ok_or_else(|| invalid(addr, "AssociateAddress returned no association id"))?
        .to_string();
    Ok(live(
        &id,
        [
            ("id", json!(id)),
            ("allocation_id", json!(allocation)),
            ("instance_id", json!(instance)),
        ],
    ))
}

pub async fn delete_eip_association(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
) -> Result<(), ProviderError> {
    absent_ok(
        addr,
        "DisassociateAddress",
        aws.ec2
            .disassociate_address()
            .association_id(&prior.id)
            .send()
            .await,
    )
    .map(|_| ())
}

// ---------------------------------------------------------------- NAT gateways

fn nat_live(n: &aws_sdk_ec2::types::NatGateway) -> Live {
    let id = n.nat_gateway_id().unwrap_or_default();
    let alloc = n
        .nat_gateway_addresses()
        .first()
        .and_then(|a| a.allocation_id());
    live(
        id,
        [
            ("id", json!(id)),
            ("subnet_id", json!(n.subnet_id())),
            ("allocation_id", json!(alloc)),
            (
                "connectivity_type",
                json!(n.connectivity_type().map_or("public", |c| c.as_str())),
            ),
            ("tags", tags::ec2_value(n.tags())),
        ],
    )
}

/// NAT gateways in every state but deleted and failed, with their state.
async fn describe_nats(
    aws: &Aws,
    at: &Address,
    filters: Vec<aws_sdk_ec2::types::Filter>,
) -> Result<Vec<(Live, NatGatewayState)>, ProviderError> {
    let out = aws
        .ec2
        .describe_nat_gateways()
        .set_filter(Some(filters))
        .send()
        .await
        .map_err(|e| sdk_error(at, "DescribeNatGateways", &e))?;
    Ok(out
        .nat_gateways()
        .iter()
        .filter_map(|n| {
            let state = n.state()?.clone();
            (!matches!(state, NatGatewayState::Deleted | NatGatewayState::Failed))
                .then(|| (nat_live(n), state))
        })
        .collect())
}

pub async fn read_nats(aws: &Aws, items: &[(Address, Live)]) -> Found {
    let at = batch_addr(items);
    let found = describe_nats(aws, &at, vec![filter("nat-gateway-id", ids(items))]).await?;
    Ok(by_id(
        items,
        found
            .into_iter()
            .filter(|(_, s)| *s != NatGatewayState::Deleting)
            .map(|(l, _)| l)
            .collect(),
    ))
}

pub async fn create_nat(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let owned = describe_nats(aws, addr, owner_filters(aws, addr)).await?;
    let id = match owned
        .into_iter()
        .find(|(_, s)| *s != NatGatewayState::Deleting)
    {
        Some((l, _)) => l.id,
        None => {
            let connectivity =
                ConnectivityType::from(s_opt(desired, "connectivity_type").unwrap_or("public"));
            let out = aws
                .retry_consistency(ctx, NOT_YET_VISIBLE, || async {
                    aws.ec2
                        .create_nat_gateway()
                        .subnet_id(s(addr, desired, "subnet_id")?)
                        .allocation_id(s(addr, desired, "allocation_id")?)
                        .connectivity_type(connectivity.clone())
                        .tag_specifications(tags::spec(ResourceType::Natgateway, desired))
                        .send()
                        .await
                        .map_err(|e| sdk_error(addr, "CreateNatGateway", &e))
                })
                .await?;
            out.nat_gateway()
                .and_then(|n| n.nat_gateway_id())
                .ok_or_else(|| invalid(addr, "CreateNatGateway returned no id"))?
                .to_string()
        }
    };
    aws.wait_until(addr, ctx, "available", aws.timeouts.nat_gateway, || async {
        let out = aws
            .ec2
            .describe_nat_gateways()
            .nat_gateway_ids(&id)
            .send()
            .await
            .map_err(|e| sdk_error(addr, "DescribeNatGateways", &e))?;
        let Some(n) = out.nat_gateways().first() else {
            return Ok(None);
        };
        match n.state() {
            Some(NatGatewayState::Available) => Ok(Some(nat_live(n))),
            Some(NatGatewayState::Failed) => Err(ProviderError::new(
                addr,
                n.failure_code().unwrap_or("NatGatewayFailed"),
                format!(
                    "NAT gateway `{id}` failed: {}",
                    n.failure_message().unwrap_or("no reason given")
                ),
                false,
            )),
            _ => Ok(None),
        }
    })
    .await
}

// ---------------------------------------------------------------- route tables, routes, associations

pub async fn read_route_tables(aws: &Aws, items: &[(Address, Live)]) -> Found {
    let tables = describe_tables(aws, items, "route-table-id", ids(items)).await?;
    Ok(tables_found(&tables, items))
}

/// The route tables a filter selects, for the reads of `items`.
async fn describe_tables(
    aws: &Aws,
    items: &[(Address, Live)],
    name: &str,
    values: Vec<String>,
) -> Result<Vec<aws_sdk_ec2::types::RouteTable>, ProviderError> {
    let at = batch_addr(items);
    let out = aws
        .ec2
        .describe_route_tables()
        .filters(filter(name, values))
        .send()
        .await
        .map_err(|e| sdk_error(&at, "DescribeRouteTables", &e))?;
    Ok(out.route_tables().to_vec())
}

fn tables_found(
    tables: &[aws_sdk_ec2::types::RouteTable],
    items: &[(Address, Live)],
) -> BTreeMap<Address, Live> {
    let found = tables
        .iter()
        .map(|t| {
            let id = t.route_table_id().unwrap_or_default();
            live(
                id,
                [
                    ("id", json!(id)),
                    ("vpc_id", json!(t.vpc_id())),
                    ("tags", tags::ec2_value(t.tags())),
                ],
            )
        })
        .collect();
    by_id(items, found)
}

/// The table of each route, from its id.
fn route_tables_of(items: &[(Address, Live)]) -> Vec<String> {
    items
        .iter()
        .filter_map(|(_, l)| split_route_id(&l.id).map(|(t, _)| t.to_string()))
        .collect()
}

/// Route tables, their routes and their subnet associations, read with one
/// DescribeRouteTables of every table they name. An association stays on
/// its table (moving a subnet to another table makes a new association),
/// so the table the state records for it is where it is, if it still is;
/// associations recorded without one are read by their own id.
pub async fn read_route_family(
    aws: &Aws,
    tables: &[(Address, Live)],
    routes: &[(Address, Live)],
    associations: &[(Address, Live)],
) -> (Found, Found, Found) {
    let (placed, unplaced): (Vec<_>, Vec<_>) = associations
        .iter()
        .cloned()
        .partition(|(_, l)| s_opt(&l.attrs, "route_table_id").is_some());
    let mut names: Vec<String> = ids(tables);
    names.extend(route_tables_of(routes));
    names.extend(
        placed
            .iter()
            .filter_map(|(_, l)| s_opt(&l.attrs, "route_table_id").map(str::to_string)),
    );
    names.sort();
    names.dedup();
    let all: Vec<(Address, Live)> = tables
        .iter()
        .chain(routes)
        .chain(&placed)
        .cloned()
        .collect();
    let shared = async {
        if all.is_empty() {
            return Ok(Vec::new());
        }
        describe_tables(aws, &all, "route-table-id", names).await
    };
    let own = async {
        if unplaced.is_empty() {
            return Ok(BTreeMap::new());
        }
        read_associations(aws, &unplaced).await
    };
    let (shared, own) = futures::join!(shared, own);
    let for_kind =
        |items: &[(Address, Live)]| -> Result<&[aws_sdk_ec2::types::RouteTable], ProviderError> {
            shared.as_deref().map_err(|e| ProviderError {
                addr: batch_addr(items),
                ..e.clone()
            })
        };
    let tables_out = for_kind(tables).map(|t| tables_found(t, tables));
    let routes_out = for_kind(routes).map(|t| routes_found(t, routes));
    let associations_out = for_kind(&placed).and_then(|t| {
        let mut found = associations_found(t, &placed);
        found.extend(own?);
        Ok(found)
    });
    (tables_out, routes_out, associations_out)
}

pub async fn create_route_table(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let owned = aws
        .ec2
        .describe_route_tables()
        .set_filters(Some(owner_filters(aws, addr)))
        .send()
        .await
        .map_err(|e| sdk_error(addr, "DescribeRouteTables", &e))?;
    let id = match owned
        .route_tables()
        .first()
        .and_then(|t| t.route_table_id())
    {
        Some(id) => id.to_string(),
        None => {
            let out = aws
                .retry_consistency(ctx, NOT_YET_VISIBLE, || async {
                    aws.ec2
                        .create_route_table()
                        .vpc_id(s(addr, desired, "vpc_id")?)
                        .tag_specifications(tags::spec(ResourceType::RouteTable, desired))
                        .send()
                        .await
                        .map_err(|e| sdk_error(addr, "CreateRouteTable", &e))
                })
                .await?;
            out.route_table()
                .and_then(|t| t.route_table_id())
                .ok_or_else(|| invalid(addr, "CreateRouteTable returned no id"))?
                .to_string()
        }
    };
    reread(
        aws,
        addr,
        &Live {
            id,
            attrs: Attrs::new(),
        },
    )
    .await
}

/// A route's id: `<route table id>_<destination>`, as EC2 has none of its own.
pub(super) fn route_id(table: &str, destination: &str) -> String {
    format!("{table}_{destination}")
}

fn split_route_id(id: &str) -> Option<(&str, &str)> {
    id.split_once('_')
}

pub async fn read_routes(aws: &Aws, items: &[(Address, Live)]) -> Found {
    let tables = describe_tables(aws, items, "route-table-id", route_tables_of(items)).await?;
    Ok(routes_found(&tables, items))
}

fn routes_found(
    tables: &[aws_sdk_ec2::types::RouteTable],
    items: &[(Address, Live)],
) -> BTreeMap<Address, Live> {
    let mut found = Vec::new();
    for t in tables {
        let table = t.route_table_id().unwrap_or_default();
        for r in t.routes() {
            let Some(dest) = r.destination_cidr_block() else {
                continue;
            };
            if r.state().is_some_and(|s| s.as_str() == "blackhole") {
                continue;
            }
            let id = route_id(table, dest);
            let mut attrs = vec![
                ("id", json!(id)),
                ("route_table_id", json!(table)),
                ("destination_cidr_block", json!(dest)),
            ];
            if let Some(g) = r.gateway_id().filter(|g| *g != "local") {
                attrs.push(("gateway_id", json!(g)));
            }
            if let Some(n) = r.nat_gateway_id() {
                attrs.push(("nat_gateway_id", json!(n)));
            }
            found.push(live(&id, attrs));
        }
    }
    by_id(items, found)
}

pub async fn create_route(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let table = s(addr, desired, "route_table_id")?;
    let dest = s(addr, desired, "destination_cidr_block")?;
    let created = aws
        .retry_consistency(ctx, NOT_YET_VISIBLE, || async {
            aws.ec2
                .create_route()
                .route_table_id(table)
                .destination_cidr_block(dest)
                .set_gateway_id(s_opt(desired, "gateway_id").map(str::to_string))
                .set_nat_gateway_id(s_opt(desired, "nat_gateway_id").map(str::to_string))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| sdk_error(addr, "CreateRoute", &e))
        })
        .await;
    let id = route_id(table, dest);
    match created {
        Ok(()) => {}
        // Made by an interrupted run (or by hand): point it where the stack says.
        Err(e) if e.code == "RouteAlreadyExists" => {
            let prior = Live {
                id: id.clone(),
                attrs: Attrs::new(),
            };
            return update_route(aws, addr, &prior, desired, ctx).await;
        }
        Err(e) => return Err(e),
    }
    reread(
        aws,
        addr,
        &Live {
            id,
            attrs: Attrs::new(),
        },
    )
    .await
}

pub async fn update_route(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    desired: &Attrs,
    _ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    aws.ec2
        .replace_route()
        .route_table_id(s(addr, desired, "route_table_id")?)
        .destination_cidr_block(s(addr, desired, "destination_cidr_block")?)
        .set_gateway_id(s_opt(desired, "gateway_id").map(str::to_string))
        .set_nat_gateway_id(s_opt(desired, "nat_gateway_id").map(str::to_string))
        .send()
        .await
        .map_err(|e| sdk_error(addr, "ReplaceRoute", &e))?;
    reread(aws, addr, prior).await
}

pub async fn read_associations(aws: &Aws, items: &[(Address, Live)]) -> Found {
    let tables = describe_tables(
        aws,
        items,
        "association.route-table-association-id",
        ids(items),
    )
    .await?;
    Ok(associations_found(&tables, items))
}

fn associations_found(
    tables: &[aws_sdk_ec2::types::RouteTable],
    items: &[(Address, Live)],
) -> BTreeMap<Address, Live> {
    let mut found = Vec::new();
    for t in tables {
        for a in t.associations() {
            let (Some(id), Some(subnet)) = (a.route_table_association_id(), a.subnet_id()) else {
                continue;
            };
            found.push(live(
                id,
                [
                    ("id", json!(id)),
                    ("subnet_id", json!(subnet)),
                    ("route_table_id", json!(t.route_table_id())),
                ],
            ));
        }
    }
    by_id(items, found)
}

pub async fn create_association(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let subnet = s(addr, desired, "subnet_id")?;
    let table = s(addr, desired, "route_table_id")?;
    // The subnet may already be associated (an interrupted run): adopt or move it.
    let existing = aws
        .ec2
        .describe_route_tables()
        .filters(filter("association.subnet-id", [subnet]))
        .send()
        .await
        .map_err(|e| sdk_error(addr, "DescribeRouteTables", &e))?;
    let current = existing.route_tables().iter().find_map(|t| {
        t.associations()
            .iter()
            .find(|a| a.subnet_id() == Some(subnet))
            .and_then(|a| a.route_table_association_id())
            .map(|id| (id.to_string(), t.route_table_id() == Some(table)))
    });
    let id = match current {
        Some((id, true)) => id,
        Some((id, false)) => {
            let prior = Live {
                id,
                attrs: Attrs::new(),
            };
            return update_association(aws, addr, &prior, desired, ctx).await;
        }
        None => {
            let out = aws
                .retry_consistency(ctx, NOT_YET_VISIBLE, || async {
                    aws.ec2
                        .associate_route_table()
                        .subnet_id(subnet)
                        .route_table_id(table)
                        .send()
                        .await
                        .map_err(|e| sdk_error(addr, "AssociateRouteTable", &e))
                })
                .await?;
            out.association_id()
                .ok_or_else(|| invalid(addr, "AssociateRouteTable returned no association id"))?
                .to_string()
        }
    };
    reread(
        aws,
        addr,
        &Live {
            id,
            attrs: Attrs::new(),
        },
    )
    .await
}

pub async fn update_association(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    desired: &Attrs,
    _ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let out = aws
        .ec2
        .replace_route_table_association()
        .association_id(&prior.id)
        .route_table_id(s(addr, desired, "route_table_id")?)
        .send()
        .await
        .map_err(|e| sdk_error(addr, "ReplaceRouteTableAssociation", &e))?;
    let id = out.new_association_id().unwrap_or(&prior.id).to_string();
    reread(
        aws,
        addr,
        &Live {
            id,
            attrs: Attrs::new(),
        },
    )
    .await
}

// ---------------------------------------------------------------- deletes

/// Deletes any network object; gone already is success. Dependency errors
/// (an ENI of a NAT gateway still detaching) are retried for a while.
pub async fn delete(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    ctx: &OpContext<'_>,
) -> Result<(), ProviderError> {
    let id = prior.id.as_str();
    let ec2 = &aws.ec2;
    let result = aws
        .retry_consistency(
            ctx,
            &[
                "DependencyViolation",
                "InvalidIPAddress.InUse",
                "AuthFailure.AddressInUse",
            ],
            || async {
                match addr.kind() {
                    "vpc" => absent_ok(addr, "DeleteVpc", ec2.delete_vpc().vpc_id(id).send().await)
                        .map(|_| ()),
                    "internet_gateway" => {
                        if let Some(vpc) = s_opt(&prior.attrs, "vpc_id") {
                            absent_ok(
                                addr,
                                "DetachInternetGateway",
                                ec2.detach_internet_gateway()
                                    .internet_gateway_id(id)
                                    .vpc_id(vpc)
                                    .send()
                                    .await,
                            )?;
                        }
                        absent_ok(
                            addr,
                            "DeleteInternetGateway",
                            ec2.delete_internet_gateway()
                                .internet_gateway_id(id)
                                .send()
                                .await,
                        )
                        .map(|_| ())
                    }
                    "subnet" => absent_ok(
                        addr,
                        "DeleteSubnet",
                        ec2.delete_subnet().subnet_id(id).send().await,
                    )
                    .map(|_| ()),
                    "eip" => absent_ok(
                        addr,
                        "ReleaseAddress",
                        ec2.release_address().allocation_id(id).send().await,
                    )
                    .map(|_| ()),
                    "nat_gateway" => absent_ok(
                        addr,
                        "DeleteNatGateway",
                        ec2.delete_nat_gateway().nat_gateway_id(id).send().await,
                    )
                    .map(|_| ()),
                    "route_table" => absent_ok(
                        addr,
                        "DeleteRouteTable",
                        ec2.delete_route_table().route_table_id(id).send().await,
                    )
                    .map(|_| ()),
                    "route" => {
                        let Some((table, dest)) = split_route_id(id) else {
                            return Ok(());
                        };
                        absent_ok(
                            addr,
                            "DeleteRoute",
                            ec2.delete_route()
                                .route_table_id(table)
                                .destination_cidr_block(dest)
                                .send()
                                .await,
                        )
                        .map(|_| ())
                    }
                    _ => absent_ok(
                        addr,
                        "DisassociateRouteTable",
                        ec2.disassociate_route_table()
                            .association_id(id)
                            .send()
                            .await,
                    )
                    .map(|_| ()),
                }
            },
        )
        .await;
    result?;
    if addr.kind() == "nat_gateway" {
        aws.wait_until(addr, ctx, "deleted", aws.timeouts.nat_gateway, || async {
            let left = describe_nats(aws, addr, vec![filter("nat-gateway-id", [id])]).await?;
            Ok(left.is_empty().then_some(()))
        })
        .await?;
    }
    Ok(())
}
