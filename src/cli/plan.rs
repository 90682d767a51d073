//! `slipway plan`: refresh, diff, print; optionally save for `apply FILE`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::Exit;
use super::common::{self, Ctx};
use crate::plan::Mode;
use crate::render;

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Save the plan to FILE for `slipway apply FILE`
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Plan the deletion of the stack (or of `--env`) instead
    #[arg(long)]
    pub destroy: bool,
    /// With `--destroy`: only this environment's resources
    #[arg(long, value_name = "NAME", requires = "destroy")]
    pub env: Option<String>,
    /// With `--destroy`: allow destroying protected environments
    #[arg(long, requires = "destroy")]
    pub allow_protected: bool,
}

pub async fn run(ctx: &Ctx<'_>, args: &PlanArgs) -> Result<Exit> {
    let stack = ctx.load_stack()?;
    let desired = stack.desired()?;
    let backend = ctx.backend(&stack)?;
    let state = common::load_state(&backend, &stack)?;
    let platform = ctx.platform(&stack).await?;
    let mode = if args.destroy {
        super::apply::check_destroy_allowed(&stack, args.env.as_deref(), args.allow_protected)?;
        Mode::Destroy {
            env: args.env.clone(),
        }
    } else {
        Mode::Apply
    };
    let planned = common::make_plan(
        ctx,
        &platform.providers,
        &stack,
        &desired,
        state.as_ref(),
        mode,
    );
    let plan = platform.gated(&ctx.printer, planned).await?;
    if ctx.printer.json() {
        ctx.printer.out(&render::json::plan(&plan).to_string());
    } else {
        ctx.printer
            .out(&render::text::plan(&plan, ctx.printer.color()));
    }
    if let Some(out) = &args.out {
        common::save_plan(&plan, out)?;
        ctx.printer.info(&format!(
            "Saved the plan to `{}`; run `slipway apply {}` to execute exactly this plan.",
            out.display(),
            out.display()
        ));
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        Exit::Changes
    } else {
        Exit::Ok
    })
}
