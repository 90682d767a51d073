//! IAM roles, managed-policy attachments, inline policies, instance profiles
//! and customer-managed policies. IAM names are unique per account, so an
//! object of the same name is adopted only when it carries this stack's tags.

use std::collections::BTreeMap;

use aws_sdk_iam::types::Tag;
use serde_json::{Value, json};

use super::error::{absent_ok, code_of, invalid, sdk_error};
use super::tags::{ADDRESS_TAG, STACK_TAG};
use super::{Aws, live, policy, s, s_opt};
use crate::addr::Address;
use crate::provider::{OpContext, ProviderError};
use crate::resource::{Attrs, Live};

type Found = Result<BTreeMap<Address, Live>, ProviderError>;

/// IAM takes a moment before a new role is usable by other IAM calls.
const NOT_YET_VISIBLE: &[&str] = &["NoSuchEntity"];

fn iam_tags(addr: &Address, attrs: &Attrs) -> Result<Vec<Tag>, ProviderError> {
    super::tags::desired(attrs)
        .into_iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| invalid(addr, format!("bad tag: {e}")))
        })
        .collect()
}

fn tags_value(tags: &[Tag]) -> Value {
    super::tags::to_value(tags.iter().map(|t| (t.key(), t.value())))
}

fn owned_by(tags: &[Tag], aws: &Aws, addr: &Address) -> bool {
    let addr_s = addr.to_string();
    tags.iter()
        .any(|t| t.key() == STACK_TAG && t.value() == aws.stack)
        && tags
            .iter()
            .any(|t| t.key() == ADDRESS_TAG && t.value() == addr_s)
}

/// `id`: what `slipway import` takes to adopt it.
fn foreign(addr: &Address, what: &str, name: &str, id: &str) -> ProviderError {
    ProviderError::new(
        addr,
        "EntityAlreadyExists",
        format!(
            "IAM {what} `{name}` already exists and is not tagged as this resource of this stack; adopt it with `slipway import {addr} {id}`, rename it in the stack, or delete it"
        ),
        false,
    )
}

fn json_text(addr: &Address, attrs: &Attrs, key: &str) -> Result<String, ProviderError> {
    match attrs.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v @ Value::Object(_)) => Ok(v.to_string()),
        _ => Err(invalid(
            addr,
            format!("attribute `{key}` (a policy document) is missing"),
        )),
    }
}

pub async fn read(aws: &Aws, kind: &str, items: &[(Address, Live)]) -> Found {
    super::read_each(items, |a, prior| async move {
        match kind {
            "iam_role" => read_role(aws, a, prior).await,
            "iam_role_policy_attachment" => read_attachment(aws, a, prior).await,
            "iam_role_policy" => read_inline(aws, a, prior).await,
            "iam_instance_profile" => read_profile(aws, a, prior).await,
            _ => read_policy(aws, a, prior).await,
        }
    })
    .await
}

// ---------------------------------------------------------------- roles

async fn read_role(aws: &Aws, addr: &Address, prior: &Live) -> Result<Option<Live>, ProviderError> {
    let Some(out) = absent_ok(
        addr,
        "GetRole",
        aws.iam.get_role().role_name(&prior.id).send().await,
    )?
    else {
        return Ok(None);
    };
    let Some(role) = out.role() else {
        return Ok(None);
    };
    let doc = role
        .assume_role_policy_document()
        .map(policy::decode)
        .unwrap_or(Value::Null);
    let mut attrs = vec![
        ("id", json!(role.role_name())),
        ("name", json!(role.role_name())),
        ("arn", json!(role.arn())),
        ("unique_id", json!(role.role_id())),
        (
            "assume_role_policy",
            policy::as_live(doc, prior.attrs.get("assume_role_policy")),
        ),
        ("tags", tags_value(role.tags())),
    ];
    if prior.attrs.contains_key("path") {
        attrs.push(("path", json!(role.path())));
    }
    if prior.attrs.contains_key("description") {
        attrs.push(("description", json!(role.description())));
    }
    Ok(Some(live(role.role_name(), attrs)))
}

async fn create_role(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let name = s(addr, desired, "name")?;
    let trust = json_text(addr, desired, "assume_role_policy")?;
    let tags = iam_tags(addr, desired)?;
    // `Ok(false)`: a role of that name exists already.
    let created = aws
        .retry_consistency(ctx, &[PRINCIPAL_NOT_YET_VISIBLE], || async {
            match aws
                .iam
                .create_role()
                .role_name(name)
                .assume_role_policy_document(&trust)
                .set_path(s_opt(desired, "path").map(str::to_string))
                .set_description(s_opt(desired, "description").map(str::to_string))
                .set_tags(Some(tags.clone()))
                .send()
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if code_of(&e) == Some("EntityAlreadyExists") => Ok(false),
                Err(e) => Err(principal_not_yet_visible(sdk_error(addr, "CreateRole", &e))),
            }
        })
        .await?;
    if !created {
        let existing = aws
            .iam
            .get_role()
            .role_name(name)
            .send()
            .await
            .map_err(|e| sdk_error(addr, "GetRole", &e))?;
        if !existing
            .role()
            .is_some_and(|r| owned_by(r.tags(), aws, addr))
        {
            return Err(foreign(addr, "role", name, name));
        }
        let prior = Live {
            id: name.to_string(),
            attrs: Attrs::new(),
        };
        let prior = read_role(aws, addr, &prior).await?.unwrap_or(prior);
        return update(aws, addr, &prior, desired, ctx).await;
    }
    let prior = Live {
        id: name.to_string(),
        attrs: desired.clone(),
    };
    read_back(aws, addr, &prior, ctx).await
}

async fn read_back(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    aws.retry_consistency(ctx, NOT_YET_VISIBLE, || async {
        let found = read(aws, addr.kind(), &[(addr.clone(), prior.clone())]).await?;
        found
            .get(addr)
            .cloned()
            .ok_or_else(|| ProviderError::new(addr, "NoSuchEntity", "not visible yet", true))
    })
    .await
}

/// Brings an IAM object's tags (role, instance profile, policy, OIDC
/// provider; `name` is its name or ARN) to the stack's.
pub(super) async fn sync_tags(
    aws: &Aws,
    addr: &Address,
    name: &str,
    prior: &Live,
    desired: &Attrs,
) -> Result<(), ProviderError> {
    let Some(change) = super::tags::change(prior.attrs.get("tags"), desired) else {
        return Ok(());
    };
    let iam = &aws.iam;
    if !change.remove.is_empty() {
        let keys = Some(change.remove);
        match addr.kind() {
            "iam_role" => iam
                .untag_role()
                .role_name(name)
                .set_tag_keys(keys)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| sdk_error(addr, "UntagRole", &e)),
            "iam_instance_profile" => iam
                .untag_instance_profile()
                .instance_profile_name(name)
                .set_tag_keys(keys)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| sdk_error(addr, "UntagInstanceProfile", &e)),
            "iam_openid_connect_provider" => iam
                .untag_open_id_connect_provider()
                .open_id_connect_provider_arn(name)
                .set_tag_keys(keys)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| sdk_error(addr, "UntagOpenIDConnectProvider", &e)),
            _ => iam
                .untag_policy()
                .policy_arn(name)
                .set_tag_keys(keys)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| sdk_error(addr, "UntagPolicy", &e)),
        }?;
    }
    if change.want.is_empty() {
        return Ok(());
    }
    let tags = Some(iam_tags(addr, desired)?);
    match addr.kind() {
        "iam_role" => iam
            .tag_role()
            .role_name(name)
            .set_tags(tags)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error(addr, "TagRole", &e)),
        "iam_instance_profile" => iam
            .tag_instance_profile()
            .instance_profile_name(name)
            .set_tags(tags)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error(addr, "TagInstanceProfile", &e)),
        "iam_openid_connect_provider" => iam
            .tag_open_id_connect_provider()
            .open_id_connect_provider_arn(name)
            .set_tags(tags)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error(addr, "TagOpenIDConnectProvider", &e)),
        _ => iam
            .tag_policy()
            .policy_arn(name)
            .set_tags(tags)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error(addr, "TagPolicy", &e)),
    }
}

/// What IAM answers, for a while, to a trust policy naming a role made
/// moments ago: worth waiting for, unlike other malformed documents.
const PRINCIPAL_NOT_YET_VISIBLE: &str = "PrincipalNotYetVisible";

fn principal_not_yet_visible(mut e: ProviderError) -> ProviderError {
    if e.code == "MalformedPolicyDocument" && e.message.contains("Invalid principal") {
        e.code = PRINCIPAL_NOT_YET_VISIBLE.to_string();
        e.retryable = true;
    }
    e
}

async fn update_role(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<(), ProviderError> {
    let name = prior.id.as_str();
    if let Some(doc) = desired.get("assume_role_policy")
        && !prior
            .attrs
            .get("assume_role_policy")
            .is_some_and(|p| policy::same(p, doc))
    {
        let trust = json_text(addr, desired, "assume_role_policy")?;
        aws.retry_consistency(ctx, &[PRINCIPAL_NOT_YET_VISIBLE], || async {
            aws.iam
                .update_assume_role_policy()
                .role_name(name)
                .policy_document(&trust)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    principal_not_yet_visible(sdk_error(addr, "UpdateAssumeRolePolicy", &e))
                })
        })
        .await?;
    }
    if let Some(d) = s_opt(desired, "description")
        && s_opt(&prior.attrs, "description") != Some(d)
    {
        aws.iam
            .update_role()
            .role_name(name)
            .description(d)
            .send()
            .await
            .map_err(|e| sdk_error(addr, "UpdateRole", &e))?;
    }
    sync_tags(aws, addr, name, prior, desired).await
}

/// Removes what IAM requires gone before a role can be deleted.
async fn delete_role(aws: &Aws, addr: &Address, name: &str) -> Result<(), ProviderError> {
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
        return Ok(());
    };
    for p in attached.attached_policies() {
        if let Some(arn) = p.policy_arn() {
            absent_ok(
                addr,
                "DetachRolePolicy",
                aws.iam
                    .detach_role_policy()
                    .role_name(name)
                    .policy_arn(arn)
                    .send()
                    .await,
            )?;
        }
    }
    if let Some(inline) = absent_ok(
        addr,
        "ListRolePolicies",
        aws.iam.list_role_policies().role_name(name).send().await,
    )? {
        for p in inline.policy_names() {
            absent_ok(
                addr,
                "DeleteRolePolicy",
                aws.iam
                    .delete_role_policy()
                    .role_name(name)
                    .policy_name(p)
                    .send()
                    .await,
            )?;
        }
    }
    if let Some(profiles) = absent_ok(
        addr,
        "ListInstanceProfilesForRole",
        aws.iam
            .list_instance_profiles_for_role()
            .role_name(name)
            .send()
            .await,
    )? {
        for p in profiles.instance_profiles() {
            absent_ok(
                addr,
                "RemoveRoleFromInstanceProfile",
                aws.iam
                    .remove_role_from_instance_profile()
                    .instance_profile_name(p.instance_profile_name())
                    .role_name(name)
                    .send()
                    .await,
            )?;
        }
    }
    absent_ok(
        addr,
        "DeleteRole",
        aws.iam.delete_role().role_name(name).send().await,
    )?;
    Ok(())
}

// ---------------------------------------------------------------- managed policy attachments

fn attachment_id(role: &str, arn: &str) -> String {
    format!("{role}/{arn}")
}

async fn read_attachment(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
) -> Result<Option<Live>, ProviderError> {
    let Some((role, arn)) = prior.id.split_once('/') else {
        return Ok(None);
    };
    let Some(out) = absent_ok(
        addr,
        "ListAttachedRolePolicies",
        aws.iam
            .list_attached_role_policies()
            .role_name(role)
            .send()
            .await,
    )?
    else {
        return Ok(None);
    };
    Ok(out
        .attached_policies()
        .iter()
        .any(|p| p.policy_arn() == Some(arn))
        .then(|| {
            live(
                &prior.id,
                [
                    ("id", json!(prior.id)),
                    ("role", json!(role)),
                    ("policy_arn", json!(arn)),
                ],
            )
        }))
}

// ---------------------------------------------------------------- inline policies

async fn read_inline(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
) -> Result<Option<Live>, ProviderError> {
    let Some((role, name)) = prior.id.split_once(':') else {
        return Ok(None);
    };
    let Some(out) = absent_ok(
        addr,
        "GetRolePolicy",
        aws.iam
            .get_role_policy()
            .role_name(role)
            .policy_name(name)
            .send()
            .await,
    )?
    else {
        return Ok(None);
    };
    let doc = policy::as_live(
        policy::decode(out.policy_document()),
        prior.attrs.get("policy"),
    );
    Ok(Some(live(
        &prior.id,
        [
            ("id", json!(prior.id)),
            ("role", json!(role)),
            ("name", json!(name)),
            ("policy", doc),
        ],
    )))
}

async fn put_inline(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let role = s(addr, desired, "role")?;
    let name = s(addr, desired, "name")?;
    let doc = json_text(addr, desired, "policy")?;
    aws.retry_consistency(ctx, NOT_YET_VISIBLE, || async {
        aws.iam
            .put_role_policy()
            .role_name(role)
            .policy_name(name)
            .policy_document(&doc)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error(addr, "PutRolePolicy", &e))
    })
    .await?;
    read_back(
        aws,
        addr,
        &Live {
            id: format!("{role}:{name}"),
            attrs: desired.clone(),
        },
        ctx,
    )
    .await
}

// ---------------------------------------------------------------- instance profiles

async fn read_profile(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
) -> Result<Option<Live>, ProviderError> {
    let Some(out) = absent_ok(
        addr,
        "GetInstanceProfile",
        aws.iam
            .get_instance_profile()
            .instance_profile_name(&prior.id)
            .send()
            .await,
    )?
    else {
        return Ok(None);
    };
    let Some(p) = out.instance_profile() else {
        return Ok(None);
    };
    let role = p.roles().first().map(|r| r.role_name());
    let mut attrs = vec![
        ("id", json!(p.instance_profile_name())),
        ("name", json!(p.instance_profile_name())),
        ("arn", json!(p.arn())),
        ("role", json!(role)),
        ("tags", tags_value(p.tags())),
    ];
    if prior.attrs.contains_key("path") {
        attrs.push(("path", json!(p.path())));
    }
    Ok(Some(live(p.instance_profile_name(), attrs)))
}

async fn create_profile(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let name = s(addr, desired, "name")?;
    let created = aws
        .iam
        .create_instance_profile()
        .instance_profile_name(name)
        .set_path(s_opt(desired, "path").map(str::to_string))
        .set_tags(Some(iam_tags(addr, desired)?))
        .send()
        .await;
    let prior = match created {
        Ok(_) => Live {
            id: name.to_string(),
            attrs: Attrs::new(),
        },
        Err(e) if code_of(&e) == Some("EntityAlreadyExists") => {
            let existing = aws
                .iam
                .get_instance_profile()
                .instance_profile_name(name)
                .send()
                .await
                .map_err(|e| sdk_error(addr, "GetInstanceProfile", &e))?;
            if !existing
                .instance_profile()
                .is_some_and(|p| owned_by(p.tags(), aws, addr))
            {
                return Err(foreign(addr, "instance profile", name, name));
            }
            read_profile(
                aws,
                addr,
                &Live {
                    id: name.to_string(),
                    attrs: Attrs::new(),
                },
            )
            .await?
            .unwrap_or(Live {
                id: name.to_string(),
                attrs: Attrs::new(),
            })
        }
        Err(e) => return Err(sdk_error(addr, "CreateInstanceProfile", &e)),
    };
    update_profile(aws, addr, &prior, desired, ctx).await?;
    read_back(aws, addr, &prior, ctx).await
}

async fn update_profile(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<(), ProviderError> {
    let name = prior.id.as_str();
    let want = s_opt(desired, "role");
    let have = s_opt(&prior.attrs, "role");
    if want != have {
        if let Some(old) = have {
            absent_ok(
                addr,
                "RemoveRoleFromInstanceProfile",
                aws.iam
                    .remove_role_from_instance_profile()
                    .instance_profile_name(name)
                    .role_name(old)
                    .send()
                    .await,
            )?;
        }
        if let Some(new) = want {
            aws.retry_consistency(ctx, NOT_YET_VISIBLE, || async {
                aws.iam
                    .add_role_to_instance_profile()
                    .instance_profile_name(name)
                    .role_name(new)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| sdk_error(addr, "AddRoleToInstanceProfile", &e))
            })
            .await?;
        }
    }
    if !prior.attrs.is_empty() {
        sync_tags(aws, addr, name, prior, desired).await?;
    }
    Ok(())
}

async fn delete_profile(aws: &Aws, addr: &Address, name: &str) -> Result<(), ProviderError> {
    if let Some(out) = absent_ok(
        addr,
        "GetInstanceProfile",
        aws.iam
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await,
    )? {
        for r in out
            .instance_profile()
            .map(|p| p.roles())
            .unwrap_or_default()
        {
            absent_ok(
                addr,
                "RemoveRoleFromInstanceProfile",
                aws.iam
                    .remove_role_from_instance_profile()
                    .instance_profile_name(name)
                    .role_name(r.role_name())
                    .send()
                    .await,
            )?;
        }
    }
    absent_ok(
        addr,
        "DeleteInstanceProfile",
        aws.iam
            .delete_instance_profile()
            .instance_profile_name(name)
            .send()
            .await,
    )?;
    Ok(())
}

// ---------------------------------------------------------------- customer-managed policies

async fn read_policy(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
) -> Result<Option<Live>, ProviderError> {
    let Some(out) = absent_ok(
        addr,
        "GetPolicy",
        aws.iam.get_policy().policy_arn(&prior.id).send().await,
    )?
    else {
        return Ok(None);
    };
    let Some(p) = out.policy() else {
        return Ok(None);
    };
    let version = p.default_version_id().unwrap_or("v1");
    let doc = match absent_ok(
        addr,
        "GetPolicyVersion",
        aws.iam
            .get_policy_version()
            .policy_arn(&prior.id)
            .version_id(version)
            .send()
            .await,
    )? {
        Some(v) => v
            .policy_version()
            .and_then(|v| v.document())
            .map(policy::decode)
            .unwrap_or(Value::Null),
        None => Value::Null,
    };
    let mut attrs = vec![
        ("id", json!(p.arn())),
        ("arn", json!(p.arn())),
        ("name", json!(p.policy_name())),
        ("policy", policy::as_live(doc, prior.attrs.get("policy"))),
        ("tags", tags_value(p.tags())),
    ];
    if prior.attrs.contains_key("description") {
        attrs.push(("description", json!(p.description())));
    }
    if prior.attrs.contains_key("path") {
        attrs.push(("path", json!(p.path())));
    }
    Ok(Some(live(p.arn().unwrap_or(&prior.id), attrs)))
}

async fn create_policy(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    let name = s(addr, desired, "name")?;
    let doc = json_text(addr, desired, "policy").map_err(|_| {
        invalid(
            addr,
            format!("policy `{name}` has no document: slipway embeds none for this controller version yet; set `[ingress] iam_policy_file` (docs/stack.md)"),
        )
    })?;
    let created = aws
        .iam
        .create_policy()
        .policy_name(name)
        .policy_document(doc)
        .set_path(s_opt(desired, "path").map(str::to_string))
        .set_description(s_opt(desired, "description").map(str::to_string))
        .set_tags(Some(iam_tags(addr, desired)?))
        .send()
        .await;
    let arn = match created {
        Ok(out) => out
            .policy()
            .and_then(|p| p.arn())
            .ok_or_else(|| invalid(addr, "CreatePolicy returned no ARN"))?
            .to_string(),
        Err(e) if code_of(&e) == Some("EntityAlreadyExists") => {
            // Find it by name among the account's local policies.
            let list = aws
                .iam
                .list_policies()
                .scope(aws_sdk_iam::types::PolicyScopeType::Local)
                .send()
                .await
                .map_err(|e| sdk_error(addr, "ListPolicies", &e))?;
            let arn = list
                .policies()
                .iter()
                .find(|p| p.policy_name() == Some(name))
                .and_then(|p| p.arn())
                .map(str::to_string)
                .ok_or_else(|| foreign(addr, "policy", name, name))?;
            let existing = aws
                .iam
                .get_policy()
                .policy_arn(&arn)
                .send()
                .await
                .map_err(|e| sdk_error(addr, "GetPolicy", &e))?;
            if !existing
                .policy()
                .is_some_and(|p| owned_by(p.tags(), aws, addr))
            {
                return Err(foreign(addr, "policy", name, &arn));
            }
            let prior = read_policy(
                aws,
                addr,
                &Live {
                    id: arn.clone(),
                    attrs: Attrs::new(),
                },
            )
            .await?
            .unwrap_or(Live {
                id: arn.clone(),
                attrs: Attrs::new(),
            });
            update_policy(aws, addr, &prior, desired).await?;
            arn
        }
        Err(e) => return Err(sdk_error(addr, "CreatePolicy", &e)),
    };
    read_back(
        aws,
        addr,
        &Live {
            id: arn,
            attrs: desired.clone(),
        },
        ctx,
    )
    .await
}

/// A new default version; IAM keeps at most five, so the oldest
/// non-default one goes first when needed.
async fn update_policy(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    desired: &Attrs,
) -> Result<(), ProviderError> {
    let arn = prior.id.as_str();
    if let Some(doc) = desired.get("policy")
        && !prior
            .attrs
            .get("policy")
            .is_some_and(|p| policy::same(p, doc))
    {
        let versions = aws
            .iam
            .list_policy_versions()
            .policy_arn(arn)
            .send()
            .await
            .map_err(|e| sdk_error(addr, "ListPolicyVersions", &e))?;
        let old: Vec<&str> = versions
            .versions()
            .iter()
            .filter(|v| !v.is_default_version())
            .filter_map(|v| v.version_id())
            .collect();
        if versions.versions().len() >= 5
            && let Some(oldest) = old
                .iter()
                .min_by_key(|v| v.trim_start_matches('v').parse::<u32>().unwrap_or(0))
        {
            aws.iam
                .delete_policy_version()
                .policy_arn(arn)
                .version_id(*oldest)
                .send()
                .await
                .map_err(|e| sdk_error(addr, "DeletePolicyVersion", &e))?;
        }
        aws.iam
            .create_policy_version()
            .policy_arn(arn)
            .policy_document(json_text(addr, desired, "policy")?)
            .set_as_default(true)
            .send()
            .await
            .map_err(|e| sdk_error(addr, "CreatePolicyVersion", &e))?;
    }
    sync_tags(aws, addr, arn, prior, desired).await
}

async fn delete_policy(aws: &Aws, addr: &Address, arn: &str) -> Result<(), ProviderError> {
    let Some(versions) = absent_ok(
        addr,
        "ListPolicyVersions",
        aws.iam.list_policy_versions().policy_arn(arn).send().await,
    )?
    else {
        return Ok(());
    };
    for v in versions
        .versions()
        .iter()
        .filter(|v| !v.is_default_version())
    {
        if let Some(id) = v.version_id() {
            absent_ok(
                addr,
                "DeletePolicyVersion",
                aws.iam
                    .delete_policy_version()
                    .policy_arn(arn)
                    .version_id(id)
                    .send()
                    .await,
            )?;
        }
    }
    absent_ok(
        addr,
        "DeletePolicy",
        aws.iam.delete_policy().policy_arn(arn).send().await,
    )?;
    Ok(())
}

// ---------------------------------------------------------------- dispatch

pub async fn create(
    aws: &Aws,
    addr: &Address,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    match addr.kind() {
        "iam_role" => create_role(aws, addr, desired, ctx).await,
        "iam_role_policy_attachment" => {
            let role = s(addr, desired, "role")?;
            let arn = s(addr, desired, "policy_arn")?;
            aws.retry_consistency(ctx, NOT_YET_VISIBLE, || async {
                aws.iam
                    .attach_role_policy()
                    .role_name(role)
                    .policy_arn(arn)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| sdk_error(addr, "AttachRolePolicy", &e))
            })
            .await?;
            read_back(
                aws,
                addr,
                &Live {
                    id: attachment_id(role, arn),
                    attrs: Attrs::new(),
                },
                ctx,
            )
            .await
        }
        "iam_role_policy" => put_inline(aws, addr, desired, ctx).await,
        "iam_instance_profile" => create_profile(aws, addr, desired, ctx).await,
        "iam_policy" => create_policy(aws, addr, desired, ctx).await,
        _ => Err(super::error::not_supported(addr)),
    }
}

pub async fn update(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    desired: &Attrs,
    ctx: &OpContext<'_>,
) -> Result<Live, ProviderError> {
    match addr.kind() {
        "iam_role" => update_role(aws, addr, prior, desired, ctx).await?,
        "iam_role_policy" => return put_inline(aws, addr, desired, ctx).await,
        "iam_instance_profile" => update_profile(aws, addr, prior, desired, ctx).await?,
        "iam_policy" => update_policy(aws, addr, prior, desired).await?,
        _ => {}
    }
    read_back(aws, addr, prior, ctx).await
}

pub async fn delete(
    aws: &Aws,
    addr: &Address,
    prior: &Live,
    _ctx: &OpContext<'_>,
) -> Result<(), ProviderError> {
    match addr.kind() {
        "iam_role" => delete_role(aws, addr, &prior.id).await,
        "iam_role_policy_attachment" => {
            let Some((role, arn)) = prior.id.split_once('/') else {
                return Ok(());
            };
            absent_ok(
                addr,
                "DetachRolePolicy",
                aws.iam
                    .detach_role_policy()
                    .role_name(role)
                    .policy_arn(arn)
                    .send()
                    .await,
            )
            .map(|_| ())
        }
        "iam_role_policy" => {
            let Some((role, name)) = prior.id.split_once(':') else {
                return Ok(());
            };
            absent_ok(
                addr,
                "DeleteRolePolicy",
                aws.iam
                    .delete_role_policy()
                    .role_name(role)
                    .policy_name(name)
                    .send()
                    .await,
            )
            .map(|_| ())
        }
        "iam_instance_profile" => delete_profile(aws, addr, &prior.id).await,
        "iam_policy" => delete_policy(aws, addr, &prior.id).await,
        _ => Err(super::error::not_supported(addr)),
    }
}
