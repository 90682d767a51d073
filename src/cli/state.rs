//! `slipway state …`: list, show, lock status, unlock.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use super::Exit;
use super::common::{self, Ctx, hinted};
use crate::addr::Address;
use crate::render::redact;

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List the addresses the state tracks, with their cloud ids
    List,
    /// Show one resource's recorded attributes
    Show {
        /// e.g. `aws.subnet.private_a`
        address: Address,
    },
    /// Show who holds the state lock, if anyone
    Lock,
    /// Remove a lock left by a run that died (give the lock id it printed)
    Unlock {
        /// The lock id, from the error or `slipway state lock`
        id: String,
    },
}

pub fn run(ctx: &Ctx<'_>, cmd: &StateCommand) -> Result<Exit> {
    let stack = ctx.load_stack()?;
    let backend = ctx.backend(&stack);
    let p = &ctx.printer;
    match cmd {
        StateCommand::List => {
            let state = common::load_state(&backend, &stack)?;
            let resources: Vec<_> = state.iter().flat_map(|s| s.resources().iter()).collect();
            if p.json() {
                let list: Vec<_> = resources.iter().map(|(a, r)| json!({"address": a.to_string(), "id": r.id, "environment": r.env})).collect();
                p.out(&json!({"format_version": crate::render::json::JSON_FORMAT_VERSION, "serial": state.as_ref().map(|s| s.serial()), "resources": list}).to_string());
            } else if resources.is_empty() {
                p.info(&format!(
                    "The state `{}` tracks no resources.",
                    backend.path().display()
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
        StateCommand::Show { address } => {
            let state = common::load_state(&backend, &stack)?;
            let Some(r) = state.as_ref().and_then(|s| s.get_opt(address)) else {
                return Err(hinted(
                    format!(
                        "the state `{}` has no resource `{address}`",
                        backend.path().display()
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
        StateCommand::Lock => match backend.lock_status()? {
            Some(holder) if p.json() => p.out(
                &json!({"locked": true, "holder": holder, "stale": holder.is_stale()}).to_string(),
            ),
            Some(holder) => p.out(&format!(
                "Locked by {holder}{}",
                if holder.is_stale() {
                    " — the process is gone; the lock is stale"
                } else {
                    ""
                }
            )),
            None if p.json() => p.out(&json!({"locked": false}).to_string()),
            None => p.out("Not locked."),
        },
        StateCommand::Unlock { id } => {
            let holder = backend.unlock(id)?;
            p.info(&format!("Removed the lock held by {holder}."));
        }
    }
    Ok(Exit::Ok)
}
