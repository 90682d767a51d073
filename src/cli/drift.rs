//! `slipway drift`: strictly read-only report of what changed outside
//! slipway. Exit 0 clean, 2 drift, 1 error.

use anyhow::Result;

use super::Exit;
use super::common::{self, Ctx};
use crate::plan::Mode;
use crate::render;

pub async fn run(ctx: &Ctx<'_>) -> Result<Exit> {
    let stack = ctx.load_stack()?;
    let desired = stack.desired()?;
    let backend = ctx.backend(&stack);
    let state = common::load_state(&backend, &stack)?;
    let providers = ctx.providers(&stack).await?;
    let plan = common::make_plan(
        ctx,
        &providers,
        &stack,
        &desired,
        state.as_ref(),
        Mode::Apply,
    )
    .await?;
    if ctx.printer.json() {
        ctx.printer
            .out(&render::json::drift(stack.name(), &plan.drift).to_string());
    } else {
        ctx.printer
            .out(&render::text::drift(&plan.drift, ctx.printer.color()));
    }
    Ok(if plan.drift.is_empty() {
        Exit::Ok
    } else {
        Exit::Changes
    })
}
