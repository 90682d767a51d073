//! `slipway validate`: offline checks of the stack file and its graph.

use anyhow::Result;
use serde_json::json;

use super::Exit;
use super::common::Ctx;

pub fn run(ctx: &Ctx<'_>) -> Result<Exit> {
    let stack = ctx.load_stack()?;
    let desired = stack.desired()?;
    if ctx.printer.json() {
        ctx.printer.out(
            &json!({
                "format_version": crate::render::json::JSON_FORMAT_VERSION,
                "valid": true,
                "stack": stack.name(),
                "path": stack.path().display().to_string(),
                "resources": desired.resources().len(),
                "environments": stack.environments().iter().map(|e| e.name()).collect::<Vec<_>>(),
            })
            .to_string(),
        );
    } else {
        ctx.printer.out(&format!(
            "{} `{}` is valid: {} resources, environments {}.",
            stack.path().display(),
            stack.name(),
            desired.resources().len(),
            stack
                .environments()
                .iter()
                .map(|e| format!("`{}`", e.name()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(Exit::Ok)
}
