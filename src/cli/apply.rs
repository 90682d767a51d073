//! `slipway apply [PLAN]` and `slipway destroy [--env NAME]`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::Exit;
use super::common::{self, Ctx, hinted};
use crate::apply::{ApplyReport, Cancel, Executor, PersistingSink};
use crate::plan::{Mode, Plan};
use crate::provider::Providers;
use crate::render;
use crate::stack::Stack;
use crate::state::{LocalBackend, ResourceState, State};
use crate::ui::progress::Progress;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved with `slipway plan --out FILE`; applied exactly, without asking
    #[arg(value_name = "PLAN")]
    pub plan: Option<PathBuf>,
    /// Do not ask for confirmation
    #[arg(long)]
    pub auto_approve: bool,
    /// How many resources to change at once
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallelism: u16,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Destroy only this environment (its namespace, Fargate profile, RBAC)
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// Allow destroying a protected environment (or a stack that has one)
    #[arg(long)]
    pub allow_protected: bool,
    /// Do not ask for confirmation
    #[arg(long)]
    pub auto_approve: bool,
    /// How many resources to delete at once
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallelism: u16,
}

/// Protected environments need `--allow-protected`.
pub fn check_destroy_allowed(
    stack: &Stack,
    env: Option<&str>,
    allow_protected: bool,
) -> Result<()> {
    match env {
        Some(name) => {
            let Some(e) = stack.environment_opt(name) else {
                let names: Vec<String> = stack
                    .environments()
                    .iter()
                    .map(|e| format!("`{}`", e.name()))
                    .collect();
                return Err(hinted(
                    format!("stack `{}` has no environment `{name}`", stack.name()),
                    format!("environments are {}", names.join(", ")),
                ));
            };
            if e.protected() && !allow_protected {
                return Err(hinted(
                    format!("environment `{name}` is protected"),
                    "add `--allow-protected` if you really mean to destroy it",
                ));
            }
        }
        None => {
            let protected: Vec<String> = stack
                .environments()
                .iter()
                .filter(|e| e.protected())
                .map(|e| format!("`{}`", e.name()))
                .collect();
            if !protected.is_empty() && !allow_protected {
                return Err(hinted(
                    format!(
                        "stack `{}` has protected environment(s) {}; destroying the stack destroys them",
                        stack.name(),
                        protected.join(", ")
                    ),
                    "add `--allow-protected` if you really mean to destroy everything, or use `--env NAME`",
                ));
            }
        }
    }
    Ok(())
}

pub async fn run_apply(ctx: &Ctx<'_>, args: &ApplyArgs) -> Result<Exit> {
    let stack = ctx.load_stack()?;
    let desired = stack.desired()?;
    let backend = ctx.backend(&stack);
    let lock = backend.lock(&command_line())?;
    report_reclaimed(ctx, &lock);
    let state = common::load_state(&backend, &stack)?;
    let providers = ctx.providers(&stack).await?;
    let plan = match &args.plan {
        Some(path) => {
            let plan = common::load_plan(path)?;
            check_saved_plan(&plan, &stack, state.as_ref(), path)?;
            plan
        }
        None => {
            let plan = common::make_plan(
                ctx,
                &providers,
                &stack,
                &desired,
                state.as_ref(),
                Mode::Apply,
            )
            .await?;
            if !ctx.printer.json() {
                ctx.printer
                    .out(&render::text::plan(&plan, ctx.printer.color()));
            }
            if plan.has_changes()
                && !approved(
                    ctx,
                    args.auto_approve,
                    "Do you want to perform these actions?",
                )?
            {
                ctx.printer.info("Apply cancelled.");
                return Ok(Exit::Error);
            }
            plan
        }
    };
    execute(
        ctx,
        &providers,
        &stack,
        &backend,
        state,
        &plan,
        usize::from(args.parallelism),
    )
    .await
}

pub async fn run_destroy(ctx: &Ctx<'_>, args: &DestroyArgs) -> Result<Exit> {
    let stack = ctx.load_stack()?;
    check_destroy_allowed(&stack, args.env.as_deref(), args.allow_protected)?;
    let desired = stack.desired()?;
    let backend = ctx.backend(&stack);
    let lock = backend.lock(&command_line())?;
    report_reclaimed(ctx, &lock);
    let state = common::load_state(&backend, &stack)?;
    let providers = ctx.providers(&stack).await?;
    let plan = common::make_plan(
        ctx,
        &providers,
        &stack,
        &desired,
        state.as_ref(),
        Mode::Destroy {
            env: args.env.clone(),
        },
    )
    .await?;
    if !ctx.printer.json() {
        ctx.printer
            .out(&render::text::plan(&plan, ctx.printer.color()));
    }
    let what = match &args.env {
        Some(env) => format!(
            "Do you really want to destroy environment `{env}` of stack `{}`?",
            stack.name()
        ),
        None => format!(
            "Do you really want to destroy every resource of stack `{}`?",
            stack.name()
        ),
    };
    if plan.has_changes() && !approved(ctx, args.auto_approve, &what)? {
        ctx.printer.info("Destroy cancelled.");
        return Ok(Exit::Error);
    }
    execute(
        ctx,
        &providers,
        &stack,
        &backend,
        state,
        &plan,
        usize::from(args.parallelism),
    )
    .await
}

fn report_reclaimed(ctx: &Ctx<'_>, lock: &crate::state::LockGuard) {
    if let Some(old) = lock.reclaimed() {
        ctx.printer.warn(&format!("took over a stale lock: {old}"));
    }
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().collect();
    let mut s = args.join(" ");
    if s.len() > 200 {
        s.truncate(200);
    }
    s
}

/// Without a terminal, only `--auto-approve` (or a saved plan) approves.
fn approved(ctx: &Ctx<'_>, auto_approve: bool, question: &str) -> Result<bool> {
    if auto_approve {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(hinted(
            "refusing to change the platform without approval: there is no terminal to ask on",
            "review a saved plan and apply it (`slipway plan --out p.json && slipway apply p.json`), or pass `--auto-approve`",
        ));
    }
    Ok(ctx.printer.confirm(question))
}

/// A saved plan is applied only against the exact state and stack it was made
/// from, and only once.
fn check_saved_plan(
    plan: &Plan,
    stack: &Stack,
    state: Option<&State>,
    path: &std::path::Path,
) -> Result<()> {
    let again = format!("make a new plan: `slipway plan --out {}`", path.display());
    if plan.stack.name != stack.name() {
        return Err(hinted(
            format!(
                "plan `{}` is for stack `{}`, not `{}`",
                path.display(),
                plan.stack.name,
                stack.name()
            ),
            again,
        ));
    }
    if plan.stack.sha256 != stack.source_sha256() {
        return Err(hinted(
            format!(
                "the stack file `{}` changed since plan `{}` was made",
                stack.path().display(),
                path.display()
            ),
            again,
        ));
    }
    if state.is_some_and(|s| s.last_applied_plan() == Some(plan.id.as_str())) {
        return Err(hinted(
            format!("plan `{}` has already been applied", path.display()),
            again,
        ));
    }
    let now = (
        state.map(|s| s.lineage().to_string()),
        state.map(State::serial),
    );
    if (plan.state_lineage.clone(), plan.state_serial) != now {
        return Err(hinted(
            format!(
                "the state changed since plan `{}` was made (serial {} then, {} now)",
                path.display(),
                plan.state_serial
                    .map_or("none".to_string(), |s| s.to_string()),
                now.1.map_or("none".to_string(), |s| s.to_string())
            ),
            again,
        ));
    }
    Ok(())
}

async fn execute(
    ctx: &Ctx<'_>,
    providers: &Providers,
    stack: &Stack,
    backend: &LocalBackend,
    state: Option<State>,
    plan: &Plan,
    parallelism: usize,
) -> Result<Exit> {
    let mut state = state.unwrap_or_else(|| State::new(stack.name()));
    // What refresh saw replaces what the state remembered; objects found
    // gone are forgotten before anything is recreated.
    let mut synced = state.clone();
    for (addr, live) in &plan.refreshed {
        let refreshed = match (live, state.get_opt(addr)) {
            (Some(l), Some(prior)) => Some(ResourceState {
                id: l.id.clone(),
                attributes: l.attrs.clone(),
                // A state written before serial groups were kept learns them.
                serial_group: prior.serial_group.clone().or_else(|| {
                    plan.changes
                        .iter()
                        .find(|c| &c.addr == addr)
                        .and_then(|c| c.serial_group.clone())
                }),
                ..prior.clone()
            }),
            _ => None,
        };
        synced.set(addr, refreshed);
    }
    if synced.resources() != state.resources() {
        backend.write(&mut synced)?;
        state = synced;
    }

    let cancel = Cancel::new();
    let signals = spawn_signal_handler(ctx, cancel.clone());
    let progress = Progress::new(&ctx.printer);
    let executor = Executor {
        providers,
        parallelism,
        hooks: &progress,
        cancel,
    };
    let report = {
        let mut sink = PersistingSink {
            backend,
            state: &mut state,
        };
        executor.apply(plan, &mut sink).await
    };
    signals.abort();
    if report.state_error.is_none() {
        state.set_last_applied_plan(&plan.id);
        backend.write(&mut state)?;
    }
    let destroy = matches!(plan.mode, Mode::Destroy { .. });
    if ctx.printer.json() {
        ctx.printer.out(&report_json(&report, &state).to_string());
    } else {
        ctx.printer
            .out(&render::text::report(&report, destroy, ctx.printer.color()));
    }
    if let Some(e) = report.state_error {
        return Err(anyhow::Error::new(e).context("the state could not be saved; the run stopped"));
    }
    Ok(if report.interrupted {
        Exit::Interrupted
    } else if report.success() {
        Exit::Ok
    } else {
        Exit::Error
    })
}

fn report_json(report: &ApplyReport, state: &State) -> serde_json::Value {
    json!({
        "format_version": render::json::JSON_FORMAT_VERSION,
        "result": if report.interrupted { "interrupted" } else if report.success() { "success" } else { "failed" },
        "done": report.done.iter().map(|(a, op)| json!({"address": a.to_string(), "operation": op.verb()})).collect::<Vec<_>>(),
        "failed": report.failed.iter().map(|f| json!({"address": f.addr.to_string(), "operation": f.op.verb(), "error": f.error, "retryable": f.retryable})).collect::<Vec<_>>(),
        "skipped": report.skipped.iter().map(|(a, op, because)| json!({"address": a.to_string(), "operation": op.verb(), "because": because.to_string()})).collect::<Vec<_>>(),
        "not_started": report.not_started.iter().map(|(a, op)| json!({"address": a.to_string(), "operation": op.verb()})).collect::<Vec<_>>(),
        "state": {"lineage": state.lineage(), "serial": state.serial()},
    })
}

/// SIGINT and SIGTERM stop new work; in-flight calls finish and state is saved.
fn spawn_signal_handler(ctx: &Ctx<'_>, cancel: Cancel) -> tokio::task::JoinHandle<()> {
    let printer = ctx.printer.clone();
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            printer.warn("interrupted: no new work will start; waiting for operations in flight to finish and saving the state");
            cancel.cancel();
        }
    })
}
