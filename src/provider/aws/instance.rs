//! EC2 instances (the Jenkins master and agents): AMI from a public SSM
//! parameter, IMDSv2 required, encrypted gp3 root volume, user data, instance
//! profile. Instance type, security groups, metadata options, instance
//! profile, root volume size and tags change in place (a type change stops
//! and starts the instance).

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    AttributeValue, BlockDeviceMapping, EbsBlockDevice, HttpTokensState,
    IamInstanceProfileSpecification, Instance, InstanceAttributeName,
    InstanceMetadataOptionsRequest, InstanceStateName, InstanceType, ResourceType, VolumeType,
};
use base64::Engine as _;
use serde_json::{Value, json};

use super::error::{code_of, invalid, sdk_error};
use super::tags::{self, filter, owner_filters};
use super::{Aws, batch_addr, i, live, s, s_opt, strings};
use crate::addr::Address;
use crate::provider::{OpContext, ProviderError};
use crate::resource::{Attrs, Live};

type Found = Result<BTreeMap<Address, Live>, ProviderError>;

const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn profile_name(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// One DescribeInstances for all, one DescribeVolumes for their root
/// volumes, and the user data of each (EC2 reports it one instance at a time).
pub async fn read(aws: &Aws, items: &[(Address, Live)]) -> Found {
    let at = batch_addr(items);
    let ids: Vec<String> = items.iter().map(|(_, l)| l.id.clone()).collect();
    let out = aws
        .ec2
        .describe_instances()
        .filters(filter("instance-id", ids))
        .filters(filter("instance-state-name", LIVE_STATES))
        .send()
        .await
        .map_err(|e| sdk_error(&at, "DescribeInstances", &e))?;
    let instances: Vec<&Instance> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .collect();
    let root_volumes: Vec<String> = instances
        .iter()
        .filter_map(|inst| {
            let root = inst.root_device_name()?;
            inst.block_device_mappings()
                .iter()
                .find(|m| m.device_name() == Some(root))
                .and_then(|m| m.ebs())
                .and_then(|e| e.volume_id())
                .map(str::to_string)
        })
        .collect();
    // The root volumes and every instance's user data at once.
    let volumes = async {
        let mut volumes: BTreeMap<String, (Option<i32>, Option<bool>)> = BTreeMap::new();
        if !root_volumes.is_empty() {
            let v = aws
                .ec2
                .describe_volumes()
                .filters(filter("volume-id", root_volumes))
                .send()
                .await
                .map_err(|e| sdk_error(&at, "DescribeVolumes", &e))?;
            for vol in v.volumes() {
                if let Some(id) = vol.volume_id() {
                    volumes.insert(id.to_string(), (vol.size(), vol.encrypted()));
                }
            }
        }
        Ok::<_, ProviderError>(volumes)
    };
    let mut asks = Vec::new();
    for inst in &instances {
        let id = inst.instance_id().unwrap_or_default();
        let Some((addr, _)) = items.iter().find(|(_, l)| l.id == id) else {
            continue;
        };
        asks.push(async move {
            let out = aws
                .ec2
                .describe_instance_attribute()
                .instance_id(id)
                .attribute(InstanceAttributeName::UserData)
                .send()
                .await
                .map_err(|e| sdk_error(addr, "DescribeInstanceAttribute", &e))?;
            let text = out
                .user_data()
                .and_then(|u| u.value())
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
            Ok::<_, ProviderError>((id, text))
        });
    }
    let (volumes, user_data) = futures::try_join!(volumes, futures::future::try_join_all(asks))?;
    let user_data: BTreeMap<&str, Option<String>> = user_data.into_iter().collect();
    let mut found = BTreeMap::new();
    for inst in instances {
        let id = inst.instance_id().unwrap_or_default();
        let Some((addr, prior)) = items.iter().find(|(_, l)| l.id == id) else {
            continue;
        };
        let user_data = user_data.get(id).cloned().flatten();
        let root_id = inst
            .root_device_name()
            .and_then(|root| {
                inst.block_device_mappings()
                    .iter()
                    .find(|m| m.device_name() == Some(root))
            })
            .and_then(|m| m.ebs())
            .and_then(|e| e.volume_id());
        let root = root_id.and_then(|v| volumes.get(v)).copied();
        let mut groups: Vec<&str> = inst
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id())
            .collect();
        groups.sort_unstable();
        let mut attrs = vec![
            ("id", json!(id)),
            ("ami", json!(inst.image_id())),
            (
                "instance_type",
                json!(inst.instance_type().map(|t| t.as_str())),
            ),
            ("subnet_id", json!(inst.subnet_id())),
            ("vpc_security_group_ids", json!(groups)),
            (
                "iam_instance_profile",
                json!(
                    inst.iam_instance_profile()
                        .and_then(|p| p.arn())
                        .map(profile_name)
                ),
            ),
            (
                "metadata_options",
                json!({
                    "http_tokens": inst.metadata_options().and_then(|m| m.http_tokens()).map(|t| t.as_str()),
                    "http_put_response_hop_limit": inst.metadata_options().and_then(|m| m.http_put_response_hop_limit()),
                }),
            ),
            ("root_volume_size", json!(root.and_then(|r| r.0))),
            ("root_volume_encrypted", json!(root.and_then(|r| r.1))),
            // Part of the instance: discovery does not report it as unmanaged.
            ("root_volume_id", json!(root_id)),
            ("user_data", json!(user_data)),
            ("private_ip", json!(inst.private_ip_address())),
            ("public_ip", json!(inst.public_ip_address())),
            (
                "public_dns",
                json!(inst.public_dns_name().filter(|d| !d.is_empty())),
            ),
            ("tags", tags::ec2_value(inst.tags())),
        ];
        // Which SSM parameter chose the AMI is not something EC2 knows; it
        // can only change through the stack (and then forces a new instance).
        if let Some(p) = prior.attrs.get("ami_parameter") {
            attrs.push(("ami_parameter", p.clone()));
        }
        if let Some(k) = inst.key_name() {
            attrs.push(("key_name", json!(k)));
        }
        let mut l = live(id, attrs);
        // Attributes the stack does not set are not reported as drift.
        if !prior.attrs.is_empty() {
            l.attrs
                .retain(|k, v| prior.attrs.contains_key(k) || !v.is_null());
        }
        found.insert(addr.clone(), l);
    }
    Ok(found)
}

async fn read_one(
    aws: &Aws,
    addr: &Address,
    id: &str,
    prior: &Attrs,
) -> Result<Option<Live>, ProviderError> {
    let items = [(
        addr.clone(),
        Live {
            id: id.to_string(),
            attrs: prior.clone(),
        },
    )];
    Ok(read(aws, &items).await?.remove(addr))
}

async fn state(
    aws: &Aws,
    addr: &Address,
    id: &str,
) -> Result<Option<InstanceStateName>, ProviderError> {
    let out = aws.ec2.describe_instances().instance_ids(id).send().await;
    match out {
        Ok(out) => Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .next()
            .and_then(|i| i.state())
            .and_then(|s| s.name())
            .cloned()),
        Err(e) if code_of(&e) == Some("InvalidInstanceID.NotFound") => Ok(None),
        Err(e) => Err(sdk_error(addr, "DescribeInstances", &e)),
    }
}

async fn wait_for_state(
    aws: &Aws,
    addr: &Address,
    id: &str,
    want: InstanceStateName,
    ctx: &OpContext<'_>,
) -> Result<(), ProviderError> {
    let label = want.as_str().to_string();
    aws.wait_until(addr, ctx, &label, aws.timeouts.instance, || async {
        match state(aws, addr, id).await? {
            Some(s) if s == want => Ok(Some(())),
            None if want == InstanceStateName::Terminated => Ok(Some(())),
            Some(InstanceStateName::Terminated) => Err(ProviderError::new(
                addr,
                "InstanceTerminated",
                format!("instance `{id}` terminated while waiting for `{label}`"),
                false,
            )),
            _ => Ok(None),
        }
    })
    .await
}

/// Until the instance is stopped (or gone): before a data volume is
/// detached from it.
pub(super) async fn wait_stopped(
    aws: &Aws,
    addr: &Address,
    id: &str,
    ctx: &OpContext<'_>,
) -> Result<(), ProviderError> {
    aws.wait_until(addr, ctx, "stopped", aws.timeouts.instance, || async {
        Ok(matches!(
            state(aws, addr, id).await?,
            None | Some(InstanceStateName::Stopped | InstanceStateName::Terminated)
        )
        .then_some(()))
    })
    .await
}

async fn resolve_ami(aws: &Aws, addr: &Address, parameter: &str) -> Result<String, ProviderError> {
    let out = aws
        .ssm
        .get_parameter()
        .name(parameter)
        .send()
        .await
        .map_err(|e| sdk_error(addr, "GetParameter", &e))?;
    out.parameter()
        .and_then(|p| p.value())
        .map(str::to_string)
        .ok_or_else(|| invalid(addr, format!("SSM parameter `{parameter}` has no value")))
}

fn metadata(desired: &Attrs) -> InstanceMetadataOptionsRequest {
    let m = desired.get("metadata_options");
    let tokens = m
        .and_then(|m| m.get("http_tokens"))
        .and_then(Value::as_str)
        .unwrap_or("required");
    let hops = m
        .and_then(|m| m.get("http_put_response_hop_limit"))
        .and_then(Value::as_i64)
        .and_then(|v| i32::try_from(v).ok());
    InstanceMetadataOptionsRequest::builder()
        .http_tokens(HttpTokensState::from(tokens))
        .set_http_put_response_hop_limit(hops)
        .build()
}

pub async fn create(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let mut filters = owner_filters(aws, addr);
    filters.push(filter("instance-state-name", LIVE_STATES));
    let owned = aws
        .ec2
        .describe_instances()
        .set_filters(Some(filters))
        .send()
        .await
        .map_err(|e| sdk_error(addr, "DescribeInstances", &e))?;
    if let Some(id) = owned
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find_map(|i| i.instance_id())
    {
        // Left by a run that died before recording it: converge it instead.
        let id = id.to_string();
        wait_for_state(aws, addr, &id, InstanceStateName::Running, ctx).await?;
        let prior = read_one(aws, addr, &id, desired).await?.ok_or_else(|| {
            ProviderError::new(addr, "NotFound", format!("instance `{id}` vanished"), true)
        })?;
        return update(aws, addr, &prior, desired, ctx).await;
    }

    let parameter = s(addr, desired, "ami_parameter")?;
    let ami = resolve_ami(aws, addr, parameter).await?;
    let images = aws
        .ec2
        .describe_images()
        .image_ids(&ami)
        .send()
        .await
        .map_err(|e| sdk_error(addr, "DescribeImages", &e))?;
    let root_device = images
        .images()
        .first()
        .and_then(|i| i.root_device_name())
        .unwrap_or("/dev/xvda")
        .to_string();
    let mut ebs = EbsBlockDevice::builder()
        .volume_type(VolumeType::Gp3)
        .delete_on_termination(true)
        .encrypted(
            desired
                .get("root_volume_encrypted")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        );
    if let Some(size) = i(desired, "root_volume_size").and_then(|v| i32::try_from(v).ok()) {
        ebs = ebs.volume_size(size);
    }
    let mut groups = strings(desired, "vpc_security_group_ids");
    groups.sort();
    let user_data = s_opt(desired, "user_data").map(b64);
    let run = || async {
        aws.ec2
            .run_instances()
            .image_id(&ami)
            .instance_type(InstanceType::from(s(addr, desired, "instance_type")?))
            .min_count(1)
            .max_count(1)
            .subnet_id(s(addr, desired, "subnet_id")?)
            .set_security_group_ids(Some(groups.clone()))
            .set_iam_instance_profile(
                s_opt(desired, "iam_instance_profile")
                    .map(|p| IamInstanceProfileSpecification::builder().name(p).build()),
            )
            .set_key_name(s_opt(desired, "key_name").map(str::to_string))
            .metadata_options(metadata(desired))
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(&root_device)
                    .ebs(ebs.clone().build())
                    .build(),
            )
            .set_user_data(user_data.clone())
            .tag_specifications(tags::spec(ResourceType::Instance, desired))
            .tag_specifications(tags::spec(ResourceType::Volume, desired))
            .send()
            .await
            .map_err(|e| {
                let mut err = sdk_error(addr, "RunInstances", &e);
                // An instance profile created moments ago is not visible to EC2 yet.
                if err.code == "InvalidParameterValue"
                    && err
                        .message
                        .to_ascii_lowercase()
                        .contains("instance profile")
                {
                    err.code = "InstanceProfileNotVisible".to_string();
                }
                err
            })
    };
    let out = aws
        .retry_consistency(
            ctx,
            &[
                "InstanceProfileNotVisible",
                "InvalidGroup.NotFound",
                "InvalidSubnetID.NotFound",
            ],
            run,
        )
        .await?;
    let id = out
        .instances()
        .first()
        .and_then(|i| i.instance_id())
        .ok_or_else(|| invalid(addr, "RunInstances returned no instance"))?
        .to_string();
    wait_for_state(aws, addr, &id, InstanceStateName::Running, ctx).await?;
    read_one(aws, addr, &id, desired).await?.ok_or_else(|| {
        ProviderError::new(
            addr,
            "NotFound",
            format!("instance `{id}` cannot be read back"),
            true,
        )
    })
}

pub async fn update(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let id = prior.id.as_str();
    let differs = |k: &str| desired.get(k).is_some() && desired.get(k) != prior.attrs.get(k);
    if differs("instance_type") {
        ctx.status("stopping to change the instance type");
        aws.ec2
            .stop_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| sdk_error(addr, "StopInstances", &e))?;
        wait_for_state(aws, addr, id, InstanceStateName::Stopped, ctx).await?;
        aws.ec2
            .modify_instance_attribute()
            .instance_id(id)
            .instance_type(
                AttributeValue::builder()
                    .value(s(addr, desired, "instance_type")?)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error(addr, "ModifyInstanceAttribute", &e))?;
        aws.ec2
            .start_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| sdk_error(addr, "StartInstances", &e))?;
        wait_for_state(aws, addr, id, InstanceStateName::Running, ctx).await?;
    }
    if differs("vpc_security_group_ids") {
        aws.ec2
            .modify_instance_attribute()
            .instance_id(id)
            .set_groups(Some(strings(desired, "vpc_security_group_ids")))
            .send()
            .await
            .map_err(|e| sdk_error(addr, "ModifyInstanceAttribute", &e))?;
    }
    if differs("metadata_options") {
        let m = metadata(desired);
        aws.ec2
            .modify_instance_metadata_options()
            .instance_id(id)
            .set_http_tokens(m.http_tokens().cloned())
            .set_http_put_response_hop_limit(m.http_put_response_hop_limit())
            .send()
            .await
            .map_err(|e| sdk_error(addr, "ModifyInstanceMetadataOptions", &e))?;
    }
    if differs("iam_instance_profile") {
        let assoc = aws
            .ec2
            .describe_iam_instance_profile_associations()
            .filters(filter("instance-id", [id]))
            .send()
            .await
            .map_err(|e| sdk_error(addr, "DescribeIamInstanceProfileAssociations", &e))?;
        let spec = IamInstanceProfileSpecification::builder()
            .name(s(addr, desired, "iam_instance_profile")?)
            .build();
        match assoc
            .iam_instance_profile_associations()
            .first()
            .and_then(|a| a.association_id())
        {
            Some(a) => {
                aws.ec2
                    .replace_iam_instance_profile_association()
                    .association_id(a)
                    .iam_instance_profile(spec)
                    .send()
                    .await
                    .map_err(|e| sdk_error(addr, "ReplaceIamInstanceProfileAssociation", &e))?;
            }
            None => {
                aws.ec2
                    .associate_iam_instance_profile()
                    .instance_id(id)
                    .iam_instance_profile(spec)
                    .send()
                    .await
                    .map_err(|e| sdk_error(addr, "AssociateIamInstanceProfile", &e))?;
            }
        }
    }
    if differs("root_volume_size") {
        let want = i(desired, "root_volume_size").and_then(|v| i32::try_from(v).ok());
        let have = i(&prior.attrs, "root_volume_size").and_then(|v| i32::try_from(v).ok());
        if let (Some(w), Some(h)) = (want, have)
            && w < h
        {
            return Err(invalid(
                addr,
                format!(
                    "an EBS volume cannot shrink ({h} GiB to {w} GiB); replace the instance instead"
                ),
            ));
        }
        let out = aws
            .ec2
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| sdk_error(addr, "DescribeInstances", &e))?;
        let vol = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .next()
            .and_then(|inst| {
                let root = inst.root_device_name()?;
                inst.block_device_mappings()
                    .iter()
                    .find(|m| m.device_name() == Some(root))?
                    .ebs()?
                    .volume_id()
                    .map(str::to_string)
            });
        if let Some(vol) = vol {
            aws.ec2
                .modify_volume()
                .volume_id(vol)
                .set_size(want)
                .send()
                .await
                .map_err(|e| sdk_error(addr, "ModifyVolume", &e))?;
        }
    }
    tags::sync_ec2(aws, addr, id, prior.attrs.get("tags"), desired).await?;
    read_one(aws, addr, id, desired).await?.ok_or_else(|| {
        ProviderError::new(
            addr,
            "NotFound",
            format!("instance `{id}` cannot be read back"),
            true,
        )
    })
}

pub async fn delete(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    ctx: &OpContext<'_>,
) -> Result<(), ProviderError> {
    match aws
        .ec2
        .terminate_instances()
        .instance_ids(&prior.id)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if code_of(&e) == Some("InvalidInstanceID.NotFound") => return Ok(()),
        Err(e) => return Err(sdk_error(addr, "TerminateInstances", &e)),
    }
    wait_for_state(aws, addr, &prior.id, InstanceStateName::Terminated, ctx).await
}
