//! Machine output. The shapes are documented in docs/json.md; bump
//! [`JSON_FORMAT_VERSION`] on any incompatible change.

use serde_json::{Map, Value, json};

use super::redact;
use crate::drift::{Counts, Finding, FindingKind};
use crate::plan::{Mode, Plan};
use crate::resource::Expr;

/// The version of the JSON documents slipway prints, except plans and drift
/// reports, which have their own.
pub const JSON_FORMAT_VERSION: &str = "1";

/// `plan --json`. 2: `drift` holds findings, as `drift --json`.
pub const PLAN_JSON_FORMAT_VERSION: &str = "2";

/// `drift --json`. 2: findings of every kind, counts, errors, timings.
pub const DRIFT_JSON_FORMAT_VERSION: &str = "2";

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
        "format_version": PLAN_JSON_FORMAT_VERSION,
        "slipway_version": plan.slipway_version,
        "plan_id": plan.id,
        "created_at": plan.created_at,
        "stack": {"name": plan.stack.name, "path": plan.stack.path, "sha256": plan.stack.sha256},
        "mode": mode,
        "environment": env,
        "state": {"lineage": plan.state_lineage, "serial": plan.state_serial},
        "changes": changes,
        "drift": findings(&plan.drift),
        "summary": plan.summary(),
        "has_changes": plan.has_changes(),
    })
}

/// What `drift --json` prints.
pub struct DriftReport<'a> {
    pub stack: &'a str,
    pub findings: &'a [Finding],
    /// Addresses in the state that were read.
    pub checked: usize,
    /// What could not be checked: `(address, code, message)`.
    pub errors: &'a [(String, String, String)],
    /// Milliseconds: `total`, `read`, `discover`, `orphans`.
    pub timings: &'a [(&'static str, u128)],
}

/// A drift report for `drift --json`.
pub fn drift(r: &DriftReport<'_>) -> Value {
    let counts = Counts::of(r.findings);
    let by_kind: Map<String, Value> = FindingKind::ALL
        .iter()
        .map(|k| {
            (
                k.as_str().to_string(),
                json!(counts.by_kind.get(k).copied().unwrap_or(0)),
            )
        })
        .collect();
    let result = if !r.errors.is_empty() {
        "error"
    } else if counts.drifted() > 0 {
        "drift"
    } else {
        "clean"
    };
    json!({
        "format_version": DRIFT_JSON_FORMAT_VERSION,
        "slipway_version": env!("CARGO_PKG_VERSION"),
        "stack": r.stack,
        "result": result,
        "drifted": counts.drifted() > 0,
        "counts": {
            "by_kind": by_kind,
            "drifted": counts.drifted(),
            "ignored": counts.ignored,
            "checked": r.checked,
            "errors": r.errors.len(),
        },
        "findings": findings(r.findings),
        "errors": r.errors.iter().map(|(a, c, m)| json!({"address": a, "code": c, "message": m})).collect::<Vec<_>>(),
        "timings_ms": r.timings.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<String, Value>>(),
    })
}

/// Findings as `drift --json` and `plan --json` print them; every member
/// is present (`null` when it does not apply), sensitive values redacted.
pub fn findings(findings: &[Finding]) -> Vec<Value> {
    findings
        .iter()
        .map(|f| {
            let attr = f
                .path
                .as_deref()
                .map(|p| p.split(['.', '[']).next().unwrap_or(p))
                .unwrap_or_default();
            let shown = |v: &Option<Value>| v.as_ref().map(|v| redact(&f.address, attr, v));
            json!({
                "kind": f.kind,
                "address": f.address.to_string(),
                "id": f.id,
                "path": f.path,
                "recorded": shown(&f.recorded),
                "live": shown(&f.live),
                "ids": f.ids,
                "detail": f.detail,
                "ignored": f.ignored(),
                "ignored_by": f.ignored_by,
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
