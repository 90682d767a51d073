//! `slipway apply [PLAN]` and `slipway destroy [--env NAME]`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
use crate::state::{Backend, ResourceState, State};
use crate::ui::progress::Progress;

use super::interrupt::Interrupts;

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
    /// Allow deleting or replacing what is protected: a protected
    /// environment's resources, the cluster, the image repository
    #[arg(long)]
    pub allow_protected: bool,
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
    /// With `--env`: how long the load balancer controller gets to remove the
    /// environment's load balancers before slipway removes them itself
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = crate::clock::parse_duration)]
    pub controller_timeout: std::time::Duration,
    /// How long a namespace may take to terminate before slipway names what
    /// holds it (the finalizers left) and stops
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = crate::clock::parse_duration)]
    pub namespace_timeout: std::time::Duration,
}

/// Marks each change protected as the stack (for what it declares) or the
/// state (for what it no longer does) says.
fn protect(plan: &mut Plan, desired: &crate::resource::Desired, state: Option<&State>) {
    for c in &mut plan.changes {
        c.protected = match desired.get_opt(&c.addr) {
            Some(r) => r.is_protected(),
            None => state
                .and_then(|s| s.get_opt(&c.addr))
                .is_some_and(|r| r.protected),
        };
    }
}

/// A plan that deletes or replaces something protected needs
/// `--allow-protected`, whatever the reason (removed from the stack,
/// renamed, moved, or replaced with its container).
pub fn check_protected(plan: &Plan, allow_protected: bool) -> Result<()> {
    let losses = plan.protected_losses();
    if losses.is_empty() || allow_protected {
        return Ok(());
    }
    let listed: Vec<String> = losses
        .iter()
        .take(8)
        .map(|c| {
            let what = match c.action {
                crate::plan::Action::Delete => "deleted",
                _ => "replaced",
            };
            match (&c.env, &c.replaced_with) {
                (Some(env), _) => format!("`{}` ({what}; environment `{env}`)", c.addr),
                (None, Some(with)) => format!("`{}` ({what} with `{with}`)", c.addr),
                (None, None) => format!("`{}` ({what})", c.addr),
            }
        })
        .collect();
    let more = match losses.len() {
        n if n > 8 => format!(" and {} more", n - 8),
        _ => String::new(),
    };
    Err(hinted(
        format!(
            "refusing to delete or replace {} protected resource(s): {}{more}",
            losses.len(),
            listed.join(", ")
        ),
        "protected resources are a protected environment's and those holding data (the cluster, the image repository); review the plan and add `--allow-protected` if you mean it, or change the stack back",
    ))
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
    let backend = ctx.backend(&stack)?;
    let interrupts = Interrupts::install(&ctx.printer);
    let lock = backend.lock(&command_line())?;
    report_reclaimed(ctx, &lock);
    let state = common::load_state(&backend, &stack)?;
    let platform = ctx.platform(&stack).await?;
    let providers = &platform.providers;
    let plan = match &args.plan {
        Some(path) => {
            platform.gated(&ctx.printer, async { Ok(()) }).await?;
            let mut plan = common::load_plan(path)?;
            check_saved_plan(&plan, &stack, state.as_ref(), path)?;
            common::restore_secrets(&mut plan, &desired, state.as_ref());
            // Protection is judged now, from the stack and the state, not
            // taken from the file.
            protect(&mut plan, &desired, state.as_ref());
            check_protected(&plan, args.allow_protected)?;
            plan
        }
        None => {
            let planned = common::make_plan(
                ctx,
                providers,
                &stack,
                &desired,
                state.as_ref(),
                Mode::Apply,
            );
            let planned = platform.gated(&ctx.printer, planned);
            let Some(plan) = before_change(&interrupts, planned).await else {
                return Ok(interrupted_before_change(ctx));
            };
            let plan = plan?;
            if !ctx.printer.json() {
                ctx.printer
                    .out(&render::text::plan(&plan, ctx.printer.color()));
            }
            check_protected(&plan, args.allow_protected)?;
            if plan.has_changes() {
                let asked = approved(
                    ctx,
                    args.auto_approve,
                    "Do you want to perform these actions?",
                );
                match before_change(&interrupts, asked).await {
                    None => return Ok(interrupted_before_change(ctx)),
                    Some(Ok(true)) => {}
                    Some(Ok(false)) => {
                        ctx.printer.info("Apply cancelled.");
                        return Ok(Exit::Error);
                    }
                    Some(Err(e)) => return Err(e),
                }
            }
            plan
        }
    };
    execute(
        ctx,
        providers,
        &stack,
        &backend,
        state,
        &plan,
        Options {
            parallelism: usize::from(args.parallelism),
            allow_protected: args.allow_protected,
            interrupts,
            lock_lost: lock.lost_flag(),
        },
    )
    .await
}

pub async fn run_destroy(ctx: &Ctx<'_>, args: &DestroyArgs) -> Result<Exit> {
    let stack = ctx.load_stack()?;
    check_destroy_allowed(&stack, args.env.as_deref(), args.allow_protected)?;
    let desired = stack.desired()?;
    let backend = ctx.backend(&stack)?;
    let interrupts = Interrupts::install(&ctx.printer);
    let lock = backend.lock(&command_line())?;
    report_reclaimed(ctx, &lock);
    let state = common::load_state(&backend, &stack)?;
    let platform = ctx.platform(&stack).await?;
    if let Some(kube) = &platform.kube {
        kube.set_namespace_timeout(args.namespace_timeout);
    }
    let providers = &platform.providers;
    let planned = common::make_plan(
        ctx,
        providers,
        &stack,
        &desired,
        state.as_ref(),
        Mode::Destroy {
            env: args.env.clone(),
        },
    );
    let planned = platform.gated(&ctx.printer, planned);
    let Some(plan) = before_change(&interrupts, planned).await else {
        return Ok(interrupted_before_change(ctx));
    };
    let plan = plan?;
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
    check_protected(&plan, args.allow_protected)?;
    if plan.has_changes() {
        match before_change(&interrupts, approved(ctx, args.auto_approve, &what)).await {
            None => return Ok(interrupted_before_change(ctx)),
            Some(Ok(true)) => {}
            Some(Ok(false)) => {
                ctx.printer.info("Destroy cancelled.");
                return Ok(Exit::Error);
            }
            Some(Err(e)) => return Err(e),
        }
    }
    // Load balancers go first, while the controller runs: the
    // environment's, or every environment's and then the cluster's.
    if plan.has_changes() {
        let cluster = state
            .as_ref()
            .and_then(|s| {
                s.get_opt(
                    &crate::addr::Address::new(crate::addr::Domain::Aws, "eks_cluster", "main")
                        .ok()?,
                )
                .map(|r| r.id.clone())
            })
            .unwrap_or_else(|| stack.cluster_name().to_string());
        let environments = super::teardown::environments(&stack, state.as_ref());
        let teardown = async {
            match &args.env {
                Some(env) => match environments.iter().find(|(e, _)| e == env) {
                    Some((env, namespace)) => {
                        super::teardown::environment(
                            ctx,
                            &platform,
                            &cluster,
                            env,
                            namespace,
                            args.controller_timeout,
                        )
                        .await
                    }
                    None => Ok(()),
                },
                None => {
                    super::teardown::stack(
                        ctx,
                        &platform,
                        &cluster,
                        &environments,
                        args.controller_timeout,
                    )
                    .await
                }
            }
        };
        tokio::select! {
            done = teardown => done?,
            _ = interrupts.at_least(1) => {
                ctx.printer.warn("interrupted while removing load balancers, before any resource was deleted; the state lock is released: run the destroy again to finish");
                return Ok(Exit::Interrupted);
            }
        }
    }
    let exit = execute(
        ctx,
        providers,
        &stack,
        &backend,
        state,
        &plan,
        Options {
            parallelism: usize::from(args.parallelism),
            allow_protected: args.allow_protected,
            interrupts,
            lock_lost: lock.lost_flag(),
        },
    )
    .await?;
    if exit != Exit::Ok || args.env.is_some() {
        return Ok(exit);
    }
    // A whole-stack destroy ends by looking for anything still carrying the
    // stack's tags or labels that the state never tracked.
    let left = still_tagged(providers, stack.name()).await;
    if left.is_empty() {
        return Ok(exit);
    }
    Err(hinted(
        format!(
            "{} object(s) still carry the tags or labels of stack `{}` after the destroy: {}",
            left.len(),
            stack.name(),
            left.join(", ")
        ),
        "the state never tracked them (made by hand, or by a run whose state was lost): delete them, or adopt each with `slipway import ADDR ID` and destroy again",
    ))
}

/// Objects tagged or labelled as `stack`'s, as `ADDR (`id`)`; a provider
/// that cannot be asked is named too.
async fn still_tagged(providers: &Providers, stack: &str) -> Vec<String> {
    let none = std::collections::BTreeSet::new();
    let scope = crate::provider::DiscoverScope::everything(stack, &none);
    let mut left = Vec::new();
    for (provider, _) in providers.distinct() {
        match provider.discover(&scope).await {
            Ok(found) => left.extend(
                found
                    .tagged
                    .iter()
                    .map(|t| format!("`{}` (`{}`)", t.addr, t.id)),
            ),
            Err(e) => left.push(format!("(could not check: {e})")),
        }
    }
    left
}

fn report_reclaimed(ctx: &Ctx<'_>, lock: &crate::state::LockGuard) {
    if let Some(old) = lock.reclaimed() {
        ctx.printer.warn(&format!("took over a stale lock: {old}"));
    }
    if let Some(why) = lock.cleared_unreadable() {
        ctx.printer.warn(&format!(
            "took over an unreadable lock file left long ago ({why})"
        ));
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
/// The prompt reads on a thread of its own, so a signal can end the wait.
async fn approved(ctx: &Ctx<'_>, auto_approve: bool, question: &str) -> Result<bool> {
    if auto_approve {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(hinted(
            "refusing to change the platform without approval: there is no terminal to ask on",
            "review a saved plan and apply it (`slipway plan --out p.json && slipway apply p.json`), or pass `--auto-approve`",
        ));
    }
    let printer = ctx.printer.clone();
    let question = question.to_string();
    Ok(
        tokio::task::spawn_blocking(move || printer.confirm(&question))
            .await
            .unwrap_or(false),
    )
}

/// Runs `work` unless a signal comes first (`None`): nothing has changed
/// yet, so the run just ends.
async fn before_change<T>(interrupts: &Interrupts, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        done = work => Some(done),
        _ = interrupts.at_least(1) => None,
    }
}

fn interrupted_before_change(ctx: &Ctx<'_>) -> Exit {
    ctx.printer
        .warn("interrupted before any change was made; the state lock is released");
    Exit::Interrupted
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

/// How a run executes its plan.
struct Options {
    parallelism: usize,
    /// `--allow-protected`: deletes may take data with them.
    allow_protected: bool,
    interrupts: Interrupts,
    /// Set when the lock was taken from this run (its lease expired while
    /// it was suspended, and another run broke it).
    lock_lost: Arc<AtomicBool>,
}

async fn execute(
    ctx: &Ctx<'_>,
    providers: &Providers,
    stack: &Stack,
    backend: &Backend,
    state: Option<State>,
    plan: &Plan,
    options: Options,
) -> Result<Exit> {
    if let Some(stuck) = crate::apply::unorderable(&plan.changes) {
        let listed: Vec<String> = stuck
            .iter()
            .take(6)
            .map(|(a, op)| format!("{} `{a}`", op.verb()))
            .collect();
        return Err(hinted(
            format!(
                "this plan cannot be put in an order: {} operation(s) wait on each other ({})",
                stuck.len(),
                listed.join(", ")
            ),
            "nothing was changed; apply the stack in two steps (first the change that replaces, then the one that removes), and please report the plan (`slipway plan --json`) as a bug",
        ));
    }
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
                // Protection follows the stack for what it declares.
                protected: plan
                    .changes
                    .iter()
                    .find(|c| &c.addr == addr && c.after.is_some())
                    .map_or(prior.protected, |c| c.protected),
                ..prior.clone()
            }),
            _ => None,
        };
        synced.set(addr, refreshed);
    }
    if plan.has_changes() && synced.resources() != state.resources() {
        backend.write(&mut synced)?;
        state = synced;
    }
    for (addr, r) in state.resources() {
        providers.observed(addr, Some(&r.live()));
    }

    let cancel = Cancel::new();
    let signals = relay_interrupts(options.interrupts, cancel.clone());
    let watch = watch_lock(ctx, options.lock_lost, cancel.clone());
    let progress = Progress::new(&ctx.printer);
    let executor = Executor {
        providers,
        parallelism: options.parallelism,
        hooks: &progress,
        cancel,
        allow_data_loss: options.allow_protected,
    };
    let report = {
        let mut sink = PersistingSink {
            backend,
            state: &mut state,
        };
        executor.apply(plan, &mut sink).await
    };
    signals.abort();
    watch.abort();
    // Nothing to do writes nothing: the serial stays, so a plan saved
    // meanwhile stays valid.
    if report.state_error.is_none() && plan.has_changes() {
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
        "abandoned": report.abandoned.iter().map(|(a, op)| json!({"address": a.to_string(), "operation": op.verb()})).collect::<Vec<_>>(),
        "warnings": report.warnings.iter().map(|(a, w)| json!({"address": a.to_string(), "warning": w})).collect::<Vec<_>>(),
        "state": {"lineage": state.lineage(), "serial": state.serial()},
    })
}

/// A run whose lock was taken from it starts nothing more.
fn watch_lock(ctx: &Ctx<'_>, lost: Arc<AtomicBool>, cancel: Cancel) -> tokio::task::JoinHandle<()> {
    let printer = ctx.printer.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            if lost.load(Ordering::SeqCst) {
                printer.warn("the state lock was taken from this run (another run judged it stale): no new work will start");
                cancel.cancel();
                return;
            }
        }
    })
}

/// During apply the first signal stops new work (calls in flight finish and
/// the state is saved); a second abandons the waits.
fn relay_interrupts(interrupts: Interrupts, cancel: Cancel) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        interrupts.at_least(1).await;
        cancel.cancel();
        interrupts.at_least(2).await;
        cancel.abandon();
    })
}
