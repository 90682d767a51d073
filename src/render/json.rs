//! Machine output. The shapes are documented in docs/json.md; bump
//! [`JSON_FORMAT_VERSION`] on any incompatible change.

use serde_json::{Map, Value, json};

use super::redact;
use crate::plan::{Drift, Mode, Plan};
use crate::resource::Expr;

/// The version of every JSON document slipway prints.
pub const JSON_FORMAT_VERSION: &str = "1";

/// A plan for `plan --json`.
pub fn plan(plan: &Plan) -> Value {
    let changes: Vec<Value> = plan
        .changes
        .iter()
        .map(|c| {
            let before = c.before.as_ref().map(|l| {
                let attrs: Map<String, Value> = l
                    .attrs
                    .iter()
                    .map(|(k, v)| (k.clone(), redact(&c.addr, k, v)))
                    .collect();
                Value::Object(attrs)
            });
            let mut unknown = Vec::new();
            let after = c.after.as_ref().map(|after| {
                let mut out = Map::new();
                for (k, e) in after {
                    let v = match e.known() {
                        Some(v) => redact(&c.addr, k, &v),
                        None => {
                            unknown.push(k.clone());
                            known_part(e)
                        }
                    };
                    out.insert(k.clone(), v);
                }
                Value::Object(out)
            });
            json!({
                "address": c.addr.to_string(),
                "action": c.action.as_str(),
                "id": c.before.as_ref().map(|l| l.id.clone()),
                "before": before,
                "after": after,
                "after_unknown": unknown,
                "changed": c.changed,
                "replace_because": c.replace_because,
                "replaced_with": c.replaced_with.as_ref().map(ToString::to_string),
                "protected": c.protected,
                "create_before_destroy": c.create_before_destroy,
                "depends_on": c.depends_on.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "environment": c.env,
            })
        })
        .collect();
    let (mode, env) = match &plan.mode {
        Mode::Apply => ("apply", None),
        Mode::Destroy { env } => ("destroy", env.clone()),
    };
    json!({
        "format_version": JSON_FORMAT_VERSION,
        "slipway_version": plan.slipway_version,
        "plan_id": plan.id,
        "created_at": plan.created_at,
        "stack": {"name": plan.stack.name, "path": plan.stack.path, "sha256": plan.stack.sha256},
        "mode": mode,
        "environment": env,
        "state": {"lineage": plan.state_lineage, "serial": plan.state_serial},
        "changes": changes,
        "drift": drift_entries(&plan.drift),
        "summary": plan.summary(),
        "has_changes": plan.has_changes(),
    })
}

/// A drift report for `drift --json`.
pub fn drift(stack: &str, drift: &[Drift]) -> Value {
    json!({
        "format_version": JSON_FORMAT_VERSION,
        "stack": stack,
        "drifted": !drift.is_empty(),
        "drift": drift_entries(drift),
    })
}

fn drift_entries(drift: &[Drift]) -> Vec<Value> {
    drift
        .iter()
        .map(|d| {
            json!({
                "address": d.addr.to_string(),
                "kind": d.kind,
                "id": d.id,
                "attributes": d.attrs.iter().map(|a| json!({
                    "name": a.name,
                    "prior": a.prior.as_ref().map(|v| redact(&d.addr, &a.name, v)),
                    "live": a.live.as_ref().map(|v| redact(&d.addr, &a.name, v)),
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// The known parts of a partly unknown value; unknown parts are `null`.
fn known_part(e: &Expr) -> Value {
    match e {
        Expr::Lit(v) => v.clone(),
        Expr::Ref(_) | Expr::Concat(_) => Value::Null,
        Expr::List(items) => Value::Array(items.iter().map(known_part).collect()),
        Expr::Map(entries) => Value::Object(
            entries
                .iter()
                .filter_map(|(k, v)| match k.known() {
                    Some(Value::String(k)) => Some((k, known_part(v))),
                    _ => None,
                })
                .collect(),
        ),
    }
}
