//! `slipway import ADDR [ID]`: adopts an object that exists but that the
//! state does not track — one made by someone else (a controller installed
//! with Helm) or forgotten with `state rm` — so the next apply manages it.
//! Explicit, because apply never takes over an object it did not make.

use anyhow::Result;
use clap::Args;
use serde_json::Value;

use super::Exit;
use super::common::{self, Ctx, hinted};
use crate::addr::{Address, Domain};
use crate::resource::{Attrs, Expr, Live, Reference};
use crate::state::{ResourceState, State};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The stack's address for it, e.g.
    /// `k8s.deployment.kube-system/aws-load-balancer-controller`
    pub address: Address,
    /// The cloud's id (`vpc-0abc…`, a role name…); for a Kubernetes object
    /// it is the address's name and may be left out
    pub id: Option<String>,
}

pub async fn run(ctx: &Ctx<'_>, args: &ImportArgs) -> Result<Exit> {
    let stack = ctx.load_stack()?;
    let desired = stack.desired()?;
    let addr = &args.address;
    let Some(resource) = desired.get_opt(addr) else {
        return Err(hinted(
            format!("the stack does not declare `{addr}`"),
            "import adopts objects the stack declares; `slipway graph` lists its addresses",
        ));
    };
    let backend = ctx.backend(&stack)?;
    let _lock = backend.lock(&format!("import {addr}"))?;
    let mut state =
        common::load_state(&backend, &stack)?.unwrap_or_else(|| State::new(stack.name()));
    if let Some(r) = state.get_opt(addr) {
        return Err(hinted(
            format!("`{addr}` is already in the state (id `{}`)", r.id),
            "`slipway state rm ADDR` first, if the state points at the wrong object",
        ));
    }
    let id = match (&args.id, addr.domain()) {
        (Some(id), _) => id.clone(),
        (None, Domain::K8s) => addr.name().to_string(),
        (None, _) => {
            return Err(hinted(
                format!("importing `{addr}` needs the object's id"),
                format!("give it after the address: `slipway import {addr} ID`"),
            ));
        }
    };
    // What the reader needs to find it: the stack's attributes, with what
    // is not known yet left empty (a Kubernetes object is found by its
    // kind, namespace and name, which are literal).
    let lookup = |r: &Reference| -> Option<Value> {
        Some(
            state
                .get_opt(&r.addr)
                .and_then(|s| s.attributes.get(&r.attr).cloned())
                .unwrap_or(Value::String(String::new())),
        )
    };
    let mut attrs = Attrs::new();
    for (k, e) in resource.attrs() {
        if let Ok(v) = Expr::resolve(e, &lookup) {
            attrs.insert(k.clone(), v);
        }
    }
    let platform = ctx.platform(&stack).await?;
    let providers = &platform.providers;
    for (a, r) in state.resources() {
        providers.observed(a, Some(&r.live()));
    }
    let provider = providers.for_addr(addr)?;
    let read = async {
        let live = Live {
            id: id.clone(),
            attrs,
        };
        Ok(provider.read(addr, &live).await?)
    };
    let found = platform.gated(&ctx.printer, read).await?;
    let Some(live) = found else {
        return Err(hinted(
            format!("there is no `{id}` to import as `{addr}`"),
            "check the id (or the object's namespace and name in the stack)",
        ));
    };
    state.set(
        addr,
        Some(ResourceState {
            id: live.id.clone(),
            attributes: live.attrs,
            depends_on: resource.dependencies(),
            env: resource.env_opt().map(str::to_string),
            serial_group: resource.serial_group_opt().map(str::to_string),
            protected: resource.is_protected(),
        }),
    );
    backend.write(&mut state)?;
    ctx.printer.info(&format!(
        "Imported `{addr}` (`{}`). slipway manages it from now on: `slipway plan` shows what apply changes to make it match the stack (its labels or tags, and any field the stack sets).",
        live.id
    ));
    Ok(Exit::Ok)
}
