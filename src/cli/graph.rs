//! `slipway graph`: the desired resource graph as Graphviz DOT.

use anyhow::Result;

use super::Exit;
use super::common::Ctx;

pub fn run(ctx: &Ctx<'_>) -> Result<Exit> {
    let stack = ctx.load_stack()?;
    let desired = stack.desired()?;
    ctx.printer.out(&desired.graph().to_dot(stack.name()));
    Ok(Exit::Ok)
}
