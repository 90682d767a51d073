//! `slipway drift`: strictly read-only report of what changed outside
//! slipway — no write to AWS, Kubernetes or the state, and no lock. Exit 0
//! clean, 2 drift, 1 error (anything that could not be checked is one).

use std::time::Instant;

use anyhow::Result;
use clap::Args;

use super::Exit;
use super::common::{self, Ctx, hinted};
use crate::drift::ignore::Pattern;
use crate::plan::Mode;
use crate::refresh::RefreshError;
use crate::render;

#[derive(Debug, Args)]
pub struct DriftArgs {
    /// Accept drift matching PATTERN: an address glob, optionally
    /// `:attribute.path` (repeatable; adds to the stack's `[drift] ignore`)
    #[arg(long, value_name = "PATTERN")]
    pub ignore: Vec<String>,
}

pub async fn run(ctx: &Ctx<'_>, args: &DriftArgs) -> Result<Exit> {
    let started = Instant::now();
    match check(ctx, args, started).await {
        Ok(exit) => Ok(exit),
        Err(e) => {
            // For cron: one document on stdout, whatever went wrong.
            if ctx.printer.json() {
                let errors: Vec<(String, String, String)> = match e.downcast_ref::<RefreshError>() {
                    Some(r) => r
                        .errors
                        .iter()
                        .map(|e| (e.addr.to_string(), e.code.clone(), e.message.clone()))
                        .collect(),
                    None => vec![(String::new(), "Error".to_string(), format!("{e:#}"))],
                };
                let stack = ctx
                    .load_stack()
                    .map(|s| s.name().to_string())
                    .unwrap_or_default();
                ctx.printer.out(
                    &render::json::drift(&render::json::DriftReport {
                        stack: &stack,
                        findings: &[],
                        checked: 0,
                        errors: &errors,
                        timings: &[("total", started.elapsed().as_millis())],
                    })
                    .to_string(),
                );
            }
            Err(e)
        }
    }
}

async fn check(ctx: &Ctx<'_>, args: &DriftArgs, started: Instant) -> Result<Exit> {
    let patterns = args
        .ignore
        .iter()
        .map(|p| p.parse::<Pattern>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            hinted(
                format!("--ignore: {e}"),
                "e.g. `--ignore 'aws.instance.jenkins_agent_*:tags.LastPatched'`; see docs/drift.md",
            )
        })?;
    let stack = ctx.load_stack()?;
    let desired = stack.desired()?;
    let backend = ctx.backend(&stack)?;
    let state = common::load_state(&backend, &stack)?;
    let platform = ctx.platform(&stack).await?;
    let refreshed = common::refresh_and_plan(
        ctx,
        &platform.providers,
        &stack,
        &desired,
        state.as_ref(),
        Mode::Apply,
        true,
    );
    let (plan, info) = platform.gated(&ctx.printer, refreshed).await?;
    let mut findings = plan.drift;

    // What the controller made for Ingresses and Services now gone.
    let orphans_started = Instant::now();
    let mut errors = Vec::new();
    if !info.controller.is_empty()
        && let Some(kube) = &platform.kube
    {
        match kube.fronted().await {
            Ok(fronted) => findings.extend(crate::drift::orphans(&info.controller, &fronted)),
            Err(e) => errors.push(e),
        }
    }
    let orphans_time = orphans_started.elapsed();
    crate::drift::ignore::apply(&mut findings, stack.drift_ignore());
    for f in findings.iter_mut().filter(|f| !f.ignored()) {
        if let Some(p) = patterns.iter().find(|p| p.matches(f)) {
            f.ignored_by = Some(p.to_string());
        }
    }
    findings.sort_by(|a, b| {
        (&a.address, a.kind, &a.path, &a.id).cmp(&(&b.address, b.kind, &b.path, &b.id))
    });

    let counts = crate::drift::Counts::of(&findings);
    if ctx.printer.json() {
        let errors: Vec<(String, String, String)> = errors
            .iter()
            .map(|e| (e.addr.to_string(), e.code.clone(), e.message.clone()))
            .collect();
        ctx.printer.out(
            &render::json::drift(&render::json::DriftReport {
                stack: stack.name(),
                findings: &findings,
                checked: info.checked,
                errors: &errors,
                timings: &[
                    ("total", started.elapsed().as_millis()),
                    ("read", info.read_time.as_millis()),
                    ("discover", info.discover_time.as_millis()),
                    ("orphans", orphans_time.as_millis()),
                ],
            })
            .to_string(),
        );
    } else {
        ctx.printer
            .out(&render::text::drift(&findings, ctx.printer.color()));
    }
    // The report is out (with the error in it under `--json`): say why
    // here rather than print a second document.
    if let Some(e) = errors.into_iter().next() {
        ctx.printer.error(
            &format!("could not check what the load balancer controller made: {e}"),
            &[],
            Some("drift needs to list Ingresses and Services cluster-wide; check the cluster is reachable and the identity may list them"),
        );
        return Ok(Exit::Error);
    }
    Ok(if counts.drifted() > 0 {
        Exit::Changes
    } else {
        Exit::Ok
    })
}
