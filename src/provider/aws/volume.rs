//! EBS volumes that hold data apart from any instance (Jenkins' home), and
//! their attachments. A volume's size and tags change in place (a volume
//! only grows); its zone, type and encryption make a new one. An attachment
//! is an instance and a volume: detaching stops the instance first, so the
//! filesystem is unmounted cleanly before the volume goes.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{ResourceType, VolumeAttachmentState, VolumeState, VolumeType};
use serde_json::json;

use super::error::{code_of, invalid, sdk_error};
use super::tags::{self, filter, owner_filters};
use super::{Aws, batch_addr, i, live, s, s_opt};
use crate::addr::Address;
use crate::provider::{OpContext, ProviderError};
use crate::resource::{Attrs, Live};

type Found = Result<BTreeMap<Address, Live>, ProviderError>;

fn volume_live(v: &aws_sdk_ec2::types::Volume, prior: Option<&Attrs>) -> Live {
    let id = v.volume_id().unwrap_or_default();
    let mut l = live(
        id,
        [
            ("id", json!(id)),
            ("availability_zone", json!(v.availability_zone())),
            ("size", json!(v.size())),
            ("volume_type", json!(v.volume_type().map(|t| t.as_str()))),
            ("encrypted", json!(v.encrypted())),
            ("tags", tags::ec2_value(v.tags())),
        ],
    );
    if prior.is_some_and(|p| p.contains_key("kms_key_id")) {
        l.attrs
            .insert("kms_key_id".to_string(), json!(v.kms_key_id()));
    }
    l
}

/// The volumes of these ids, for the reads of `items`.
async fn describe_volumes(
    aws: &Aws,
    items: &[(Address, Live)],
    ids: Vec<String>,
) -> Result<Vec<aws_sdk_ec2::types::Volume>, ProviderError> {
    let at = batch_addr(items);
    let out = aws
        .ec2
        .describe_volumes()
        .filters(filter("volume-id", ids))
        .send()
        .await
        .map_err(|e| sdk_error(&at, "DescribeVolumes", &e))?;
    Ok(out.volumes().to_vec())
}

/// The volumes among `items`; one being deleted is as good as gone.
fn volumes_found(
    volumes: &[aws_sdk_ec2::types::Volume],
    items: &[(Address, Live)],
) -> BTreeMap<Address, Live> {
    let mut found = BTreeMap::new();
    for v in volumes {
        if matches!(
            v.state(),
            Some(VolumeState::Deleting | VolumeState::Deleted)
        ) {
            continue;
        }
        for (a, prior) in items {
            if Some(prior.id.as_str()) == v.volume_id() {
                found.insert(a.clone(), volume_live(v, Some(&prior.attrs)));
            }
        }
    }
    found
}

/// Volumes and their attachments, read with one DescribeVolumes of every
/// volume they name (an attachment's id names its volume).
pub async fn read_volume_family(
    aws: &Aws,
    volumes: &[(Address, Live)],
    attachments: &[(Address, Live)],
) -> (Found, Found) {
    let mut ids: Vec<String> = volumes.iter().map(|(_, l)| l.id.clone()).collect();
    ids.extend(attachment_volumes(attachments));
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return (Ok(BTreeMap::new()), Ok(BTreeMap::new()));
    }
    let all: Vec<(Address, Live)> = volumes.iter().chain(attachments).cloned().collect();
    let shared = describe_volumes(aws, &all, ids).await;
    let for_kind = |items: &[(Address, Live)]| {
        shared.as_deref().map_err(|e| ProviderError {
            addr: batch_addr(items),
            ..e.clone()
        })
    };
    (
        for_kind(volumes).map(|v| volumes_found(v, volumes)),
        for_kind(attachments).map(|v| attachments_found(v, attachments)),
    )
}

async fn describe_volume(
    aws: &Aws,
    addr: &Address,
    id: &str,
) -> Result<Option<aws_sdk_ec2::types::Volume>, ProviderError> {
    let out = aws
        .ec2
        .describe_volumes()
        .filters(filter("volume-id", [id]))
        .send()
        .await
        .map_err(|e| sdk_error(addr, "DescribeVolumes", &e))?;
    Ok(out.volumes().first().cloned())
}

async fn wait_volume(
    aws: &Aws,
    addr: &Address,
    id: &str,
    what: &str,
    ctx: &OpContext<'_>,
    done: impl Fn(Option<&aws_sdk_ec2::types::Volume>) -> bool,
) -> Result<(), ProviderError> {
    aws.wait_until(addr, ctx, what, aws.timeouts.instance, || async {
        let v = describe_volume(aws, addr, id).await?;
        Ok(done(v.as_ref()).then_some(()))
    })
    .await
}

/// Creates the volume, or adopts the one an interrupted run made.
pub async fn create_volume(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let existing = aws
        .ec2
        .describe_volumes()
        .set_filters(Some(owner_filters(aws, addr)))
        .send()
        .await
        .map_err(|e| sdk_error(addr, "DescribeVolumes", &e))?;
    let adopted = existing
        .volumes()
        .iter()
        .find(|v| {
            !matches!(
                v.state(),
                Some(VolumeState::Deleting | VolumeState::Deleted)
            )
        })
        .filter(|v| ctx.replacing_opt() != v.volume_id())
        .and_then(|v| v.volume_id().map(str::to_string));
    let id = match adopted {
        Some(id) => id,
        None => {
            let size = i(desired, "size")
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| invalid(addr, "attribute `size` (GiB) is missing"))?;
            aws.ec2
                .create_volume()
                .availability_zone(s(addr, desired, "availability_zone")?)
                .size(size)
                .volume_type(VolumeType::from(
                    s_opt(desired, "volume_type").unwrap_or("gp3"),
                ))
                .encrypted(desired.get("encrypted").and_then(|v| v.as_bool()) != Some(false))
                .set_kms_key_id(s_opt(desired, "kms_key_id").map(str::to_string))
                .tag_specifications(tags::spec(ResourceType::Volume, desired))
                .send()
                .await
                .map_err(|e| sdk_error(addr, "CreateVolume", &e))?
                .volume_id()
                .unwrap_or_default()
                .to_string()
        }
    };
    wait_volume(aws, addr, &id, "available", ctx, |v| {
        v.is_some_and(|v| matches!(v.state(), Some(VolumeState::Available | VolumeState::InUse)))
    })
    .await?;
    read_one(aws, addr, &id, desired).await
}

async fn read_one(
    aws: &Aws,
    addr: &Address,
    id: &str,
    desired: &Attrs,
) -> Result<Live, ProviderError> {
    describe_volume(aws, addr, id)
        .await?
        .map(|v| volume_live(&v, Some(desired)))
        .ok_or_else(|| {
            ProviderError::new(
                addr,
                "NotFound",
                format!("volume `{id}` cannot be read back"),
                true,
            )
        })
}

/// Grows the volume and brings its tags to the stack's; a volume never
/// shrinks (EBS cannot), so a smaller size is refused.
pub async fn update_volume(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let want = i(desired, "size");
    let have = i(&prior.attrs, "size");
    if let (Some(want), Some(have)) = (want, have)
        && want != have
    {
        if want < have {
            return Err(invalid(
                addr,
                format!(
                    "EBS volumes cannot shrink: `{}` is {have} GiB and the stack asks for {want} GiB; keep the size, or move the data to a new volume yourself",
                    prior.id
                ),
            ));
        }
        let size = i32::try_from(want).map_err(|_| invalid(addr, "size is out of range"))?;
        aws.ec2
            .modify_volume()
            .volume_id(&prior.id)
            .size(size)
            .send()
            .await
            .map_err(|e| sdk_error(addr, "ModifyVolume", &e))?;
        ctx.status(&format!("growing to {want} GiB"));
    }
    tags::sync_ec2(aws, addr, &prior.id, prior.attrs.get("tags"), desired).await?;
    read_one(aws, addr, &prior.id, desired).await
}

pub async fn delete_volume(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    ctx: &OpContext<'_>,
) -> Result<(), ProviderError> {
    match aws.ec2.delete_volume().volume_id(&prior.id).send().await {
        Ok(_) => {}
        Err(e) if code_of(&e) == Some("InvalidVolume.NotFound") => return Ok(()),
        Err(e) => return Err(sdk_error(addr, "DeleteVolume", &e)),
    }
    wait_volume(aws, addr, &prior.id, "deleted", ctx, |v| {
        v.is_none_or(|v| matches!(v.state(), Some(VolumeState::Deleted)))
    })
    .await
}

// ---------------------------------------------------------------- attachments

fn attachment_id(volume: &str, instance: &str) -> String {
    format!("{volume}:{instance}")
}

fn attachment_live(volume: &str, instance: &str, device: Option<&str>) -> Live {
    let id = attachment_id(volume, instance);
    live(
        &id,
        [
            ("id", json!(id)),
            ("volume_id", json!(volume)),
            ("instance_id", json!(instance)),
            ("device_name", json!(device)),
        ],
    )
}

/// Attached (or attaching) to the instance the id names.
/// The volume of each attachment, from its id.
fn attachment_volumes(items: &[(Address, Live)]) -> Vec<String> {
    items
        .iter()
        .filter_map(|(_, l)| l.id.split_once(':').map(|(v, _)| v.to_string()))
        .collect()
}

fn attachments_found(
    volumes: &[aws_sdk_ec2::types::Volume],
    items: &[(Address, Live)],
) -> BTreeMap<Address, Live> {
    let mut found = BTreeMap::new();
    for v in volumes {
        for a in v.attachments() {
            let (Some(volume), Some(instance)) = (a.volume_id(), a.instance_id()) else {
                continue;
            };
            if !matches!(
                a.state(),
                Some(VolumeAttachmentState::Attached | VolumeAttachmentState::Attaching)
            ) {
                continue;
            }
            let id = attachment_id(volume, instance);
            for (addr, prior) in items {
                if prior.id == id {
                    found.insert(addr.clone(), attachment_live(volume, instance, a.device()));
                }
            }
        }
    }
    found
}

pub async fn create_attachment(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let volume = s(addr, desired, "volume_id")?;
    let instance = s(addr, desired, "instance_id")?;
    let device = s(addr, desired, "device_name")?;
    let attached_here = |v: Option<&aws_sdk_ec2::types::Volume>| {
        v.is_some_and(|v| {
            v.attachments().iter().any(|a| {
                a.instance_id() == Some(instance)
                    && a.state() == Some(&VolumeAttachmentState::Attached)
            })
        })
    };
    let current = describe_volume(aws, addr, volume).await?;
    if let Some(other) = current.as_ref().and_then(|v| {
        v.attachments()
            .iter()
            .find(|a| a.instance_id().is_some_and(|i| i != instance))
            .and_then(|a| a.instance_id())
    }) {
        return Err(ProviderError::new(
            addr,
            "VolumeInUse",
            format!(
                "volume `{volume}` is attached to `{other}`, not `{instance}`: detach it there first (slipway never takes a data volume from a running instance it does not know)"
            ),
            false,
        ));
    }
    if !attached_here(current.as_ref()) {
        aws.retry_consistency(
            ctx,
            &["IncorrectState", "InvalidVolume.ZoneMismatch"],
            || async {
                match aws
                    .ec2
                    .attach_volume()
                    .volume_id(volume)
                    .instance_id(instance)
                    .device(device)
                    .send()
                    .await
                {
                    Ok(_) => Ok(()),
                    // An interrupted run's attach: it is on its way.
                    Err(e) if code_of(&e) == Some("VolumeInUse") => Ok(()),
                    Err(e) => Err(sdk_error(addr, "AttachVolume", &e)),
                }
            },
        )
        .await?;
        wait_volume(aws, addr, volume, "attached", ctx, attached_here).await?;
    }
    Ok(attachment_live(volume, instance, Some(device)))
}

/// Stops the instance (a clean shutdown unmounts the volume), then detaches.
pub async fn delete_attachment(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    ctx: &OpContext<'_>,
) -> Result<(), ProviderError> {
    let Some((volume, instance)) = prior.id.split_once(':') else {
        return Err(invalid(
            addr,
            format!("`{}` is not VOLUME:INSTANCE", prior.id),
        ));
    };
    let attached = |v: Option<&aws_sdk_ec2::types::Volume>| {
        v.is_some_and(|v| {
            v.attachments()
                .iter()
                .any(|a| a.instance_id() == Some(instance))
        })
    };
    if !attached(describe_volume(aws, addr, volume).await?.as_ref()) {
        return Ok(());
    }
    ctx.status(&format!(
        "stopping `{instance}` so that the volume is unmounted cleanly"
    ));
    match aws.ec2.stop_instances().instance_ids(instance).send().await {
        Ok(_) => super::instance::wait_stopped(aws, addr, instance, ctx).await?,
        Err(e) if code_of(&e) == Some("InvalidInstanceID.NotFound") => {}
        Err(e) if code_of(&e) == Some("IncorrectInstanceState") => {
            super::instance::wait_stopped(aws, addr, instance, ctx).await?;
        }
        Err(e) => return Err(sdk_error(addr, "StopInstances", &e)),
    }
    match aws
        .ec2
        .detach_volume()
        .volume_id(volume)
        .instance_id(instance)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e)
            if matches!(
                code_of(&e),
                Some("IncorrectState" | "InvalidAttachment.NotFound" | "InvalidVolume.NotFound")
            ) => {}
        Err(e) => return Err(sdk_error(addr, "DetachVolume", &e)),
    }
    wait_volume(aws, addr, volume, "detached", ctx, |v| !attached(v)).await
}
