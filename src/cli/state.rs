//! `slipway state …`: list, show, rm, lock status, unlock.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use super::Exit;
use super::common::{self, Ctx, hinted};
use crate::addr::Address;
use crate::render::redact;
use crate::state::lock::Unlocked;
use crate::state::{Backend, LockError, S3Backend, StateError};

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List the addresses the state tracks, with their cloud ids
    List,
    /// Show one resource's recorded attributes
    Show {
        /// e.g. `aws.subnet.private_a`
        address: Address,
    },
    /// Forget resources without deleting them: slipway stops managing them
    /// (they stay in the cloud)
    Rm {
        /// e.g. `k8s.deployment.kube-system/aws-load-balancer-controller`
        #[arg(required = true)]
        addresses: Vec<Address>,
    },
    /// Show who holds the state lock, when it was last renewed, and whether it is stale
    Lock,
    /// Create the stack's S3 state bucket, or bring it up to what a state
    /// bucket needs (versioning, encryption, no public access, TLS only, a
    /// lifecycle rule for the lock's old versions); safe to run again
    InitBackend,
    /// Move the state between the local file and the stack's S3 object,
    /// keeping its serial and lineage
    Migrate {
        /// Where the state goes: `s3` (from the local file) or `local` (from S3)
        #[arg(long, value_parser = ["s3", "local"])]
        to: String,
    },
    /// Remove a lock left by a run that died (give the lock id it printed)
    Unlock {
        /// The lock id, from the error or `slipway state lock`
        #[arg(required_unless_present = "force")]
        id: Option<String>,
        /// Remove the lock even though its lease is live; without an id,
        /// clear an empty or damaged lock file
        #[arg(long)]
        force: bool,
    },
}

pub fn run(ctx: &Ctx<'_>, cmd: &StateCommand) -> Result<Exit> {
    let stack = ctx.load_stack()?;
    let p = &ctx.printer;
    match cmd {
        StateCommand::InitBackend => return init_backend(ctx, &stack),
        StateCommand::Migrate { to } => return migrate(ctx, &stack, to),
        _ => {}
    }
    let backend = ctx.backend(&stack)?;
    match cmd {
        StateCommand::InitBackend | StateCommand::Migrate { .. } => {}
        StateCommand::List => {
            let state = common::load_state(&backend, &stack)?;
            let resources: Vec<_> = state.iter().flat_map(|s| s.resources().iter()).collect();
            if p.json() {
                let list: Vec<_> = resources.iter().map(|(a, r)| json!({"address": a.to_string(), "id": r.id, "environment": r.env})).collect();
                p.out(&json!({"format_version": crate::render::json::JSON_FORMAT_VERSION, "serial": state.as_ref().map(|s| s.serial()), "resources": list}).to_string());
            } else if resources.is_empty() {
                p.info(&format!(
                    "The state `{}` tracks no resources.",
                    backend.describe()
                ));
            } else {
                let width = resources
                    .iter()
                    .map(|(a, _)| a.to_string().len())
                    .max()
                    .unwrap_or(0);
                let lines: Vec<String> = resources
                    .iter()
                    .map(|(a, r)| format!("{:width$}  {}", a.to_string(), r.id))
                    .collect();
                p.out(&lines.join("\n"));
            }
        }
        StateCommand::Rm { addresses } => {
            let _lock = backend.lock(&format!(
                "state rm {}",
                addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            ))?;
            let Some(mut state) = common::load_state(&backend, &stack)? else {
                return Err(hinted(
                    format!("there is no state `{}` yet", backend.describe()),
                    "nothing to forget",
                ));
            };
            // All or nothing: check every address before forgetting any.
            if let Some(missing) = addresses.iter().find(|a| state.get_opt(a).is_none()) {
                return Err(hinted(
                    format!(
                        "the state `{}` has no resource `{missing}`; nothing was removed",
                        backend.describe()
                    ),
                    "`slipway state list` shows the addresses it has",
                ));
            }
            let mut forgotten = Vec::new();
            for a in addresses {
                if let Some(r) = state.get_opt(a) {
                    forgotten.push((a.clone(), r.id.clone()));
                }
                state.set(a, None);
            }
            backend.write(&mut state)?;
            for (a, id) in &forgotten {
                p.info(&format!(
                    "Removed `{a}` from the state; `{id}` still exists and slipway no longer manages it."
                ));
            }
            p.info(
                "While the stack still declares it, the next apply takes it back (it carries this stack's tags or labels); to let it go for good, remove it from the stack too.",
            );
        }
        StateCommand::Show { address } => {
            let state = common::load_state(&backend, &stack)?;
            let Some(r) = state.as_ref().and_then(|s| s.get_opt(address)) else {
                return Err(hinted(
                    format!(
                        "the state `{}` has no resource `{address}`",
                        backend.describe()
                    ),
                    "`slipway state list` shows the addresses it has",
                ));
            };
            let attrs: serde_json::Map<String, serde_json::Value> = r
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), redact(address, k, v)))
                .collect();
            let doc = json!({
                "address": address.to_string(),
                "id": r.id,
                "environment": r.env,
                "depends_on": r.depends_on.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "attributes": attrs,
            });
            p.out(&serde_json::to_string_pretty(&doc)?);
        }
        StateCommand::Lock => match backend.lock_status() {
            Ok(Some(holder)) => {
                let staleness = holder.staleness();
                if p.json() {
                    p.out(
                        &json!({
                            "locked": true,
                            "holder": holder,
                            "stale": staleness.is_stale(),
                            "stale_reason": staleness.reason,
                            "renewed_secs_ago": staleness.renewed_ago,
                        })
                        .to_string(),
                    );
                } else {
                    let next = if staleness.is_stale() {
                        "; the next `apply` or `destroy` takes it over"
                    } else {
                        ""
                    };
                    p.out(&format!("Locked by {holder}; {staleness}{next}."));
                }
            }
            Ok(None) if p.json() => p.out(&json!({"locked": false}).to_string()),
            Ok(None) => p.out("Not locked."),
            Err(err) => {
                // Locked as far as any run is concerned, by nobody we can name.
                if let (true, StateError::Lock(LockError::Unreadable { reason, .. })) =
                    (p.json(), &err)
                {
                    p.out(&json!({"locked": true, "unreadable": reason}).to_string());
                }
                return Err(err.into());
            }
        },
        StateCommand::Unlock { id, force } => match backend.unlock(id.as_deref(), *force)? {
            Unlocked::Holder(holder) => {
                p.info(&format!("Removed the lock held by {holder}."));
                if !holder.is_stale() {
                    p.warn(
                        "its lease was live: if that run is still going, it no longer keeps other runs out",
                    );
                }
            }
            Unlocked::Unreadable { reason } => p.info(&format!(
                "Removed the unreadable lock file `{}` ({reason}).",
                backend.describe_lock()
            )),
        },
    }
    Ok(Exit::Ok)
}

/// The stack's S3 location, or an error saying how to configure one.
fn s3_location(stack: &crate::stack::Stack, what: &str) -> Result<crate::state::s3::S3Location> {
    match stack.state_backend() {
        crate::stack::StateBackend::S3(at) => Ok(at.clone()),
        crate::stack::StateBackend::Local => Err(hinted(
            format!(
                "`{what}` needs the stack's S3 backend, and `{}` has none",
                stack.path().display()
            ),
            "add `[state]` with `backend = \"s3\"` and `bucket = \"NAME\"` to the stack file (docs/state.md)",
        )),
    }
}

fn init_backend(ctx: &Ctx<'_>, stack: &crate::stack::Stack) -> Result<Exit> {
    let at = s3_location(stack, "state init-backend")?;
    let backend = S3Backend::new(at.clone())?;
    let done = backend.init_backend()?;
    let p = &ctx.printer;
    if p.json() {
        p.out(
            &json!({"bucket": at.bucket, "key": at.key, "region": at.region, "done": done})
                .to_string(),
        );
    } else {
        for line in &done {
            p.info(&format!("  {line}"));
        }
        p.info(&format!(
            "The state bucket is ready; this stack's state goes to {}.",
            at.url()
        ));
    }
    Ok(Exit::Ok)
}

/// `state migrate --to s3|local`: under both locks, the state as it is
/// (serial, lineage, resources) from one backend to the other. A
/// destination holding another lineage, or a newer version of this one,
/// is refused; one holding this very version is left alone.
fn migrate(ctx: &Ctx<'_>, stack: &crate::stack::Stack, to: &str) -> Result<Exit> {
    let at = s3_location(stack, "state migrate")?;
    let local = Backend::Local(ctx.local_backend(stack));
    let s3 = Backend::S3(Box::new(S3Backend::new(at)?));
    let (from, dest) = if to == "s3" { (local, s3) } else { (s3, local) };
    let command = format!("state migrate --to {to}");
    let _from_lock = from.lock(&command)?;
    let _dest_lock = dest.lock(&command)?;
    let Some(state) = from.load_opt(stack.name())? else {
        return Err(hinted(
            format!("there is no state at `{}` to migrate", from.describe()),
            "nothing to move; runs will start a new state at the stack's backend",
        ));
    };
    let p = &ctx.printer;
    match dest.load_opt(stack.name())? {
        Some(there) if there.lineage() != state.lineage() => {
            return Err(hinted(
                format!(
                    "`{}` holds another state (lineage {}, serial {}), not this one (lineage {}): nothing was written",
                    dest.describe(),
                    there.lineage(),
                    there.serial(),
                    state.lineage()
                ),
                "if that state is stale, remove it yourself first; slipway never overwrites a different history",
            ));
        }
        Some(there) if there.serial() > state.serial() => {
            return Err(hinted(
                format!(
                    "`{}` holds a newer version of this state (serial {} over {}): nothing was written",
                    dest.describe(),
                    there.serial(),
                    state.serial()
                ),
                format!(
                    "that one is current; migrate the other way (`--to {}`) if you mean to keep it",
                    if to == "s3" { "local" } else { "s3" }
                ),
            ));
        }
        Some(there) if there == state => {
            p.info(&format!(
                "`{}` already holds this state (serial {}); nothing to do.",
                dest.describe(),
                state.serial()
            ));
            return Ok(Exit::Ok);
        }
        Some(there) if there.serial() == state.serial() && there != state => {
            return Err(hinted(
                format!(
                    "`{}` holds serial {} of this state with other contents than `{}`: the two have diverged, and nothing was written",
                    dest.describe(),
                    there.serial(),
                    from.describe()
                ),
                "compare them (`slipway state list` against each), keep the one that matches the cloud, and remove the other yourself",
            ));
        }
        _ => {}
    }
    dest.put_exact(&state)?;
    let check = dest.load_opt(stack.name())?;
    if check.as_ref() != Some(&state) {
        return Err(hinted(
            format!(
                "the state read back from `{}` is not the one written",
                dest.describe()
            ),
            "the source was left as it was; run the migration again",
        ));
    }
    p.info(&format!(
        "Moved the state (serial {}, lineage {}, {} resources) from `{}` to `{}`; `{}` was left as it was.",
        state.serial(),
        state.lineage(),
        state.resources().len(),
        from.describe(),
        dest.describe(),
        from.describe()
    ));
    if to == "local" {
        p.info("Remove `[state]` from the stack file (or set `backend = \"local\"`) so that runs use the local state.");
    }
    Ok(Exit::Ok)
}
