//! Renderers: plans, drift reports and apply summaries as text for people and
//! JSON for machines. They read; they never compute a plan or call a provider.

pub mod json;
pub mod text;

use serde_json::Value;

use crate::addr::Address;
use crate::resource::spec_opt;

/// What is shown instead of a secret.
pub const SENSITIVE: &str = "(sensitive value)";

/// Whether `attr` of `addr` must never be shown.
pub fn is_sensitive(addr: &Address, attr: &str) -> bool {
    spec_opt(&addr.kind_key()).is_some_and(|s| s.sensitive.contains(&attr))
}

/// `value`, or the sensitive placeholder.
pub fn redact(addr: &Address, attr: &str, value: &Value) -> Value {
    if is_sensitive(addr, attr) {
        Value::String(SENSITIVE.to_string())
    } else {
        value.clone()
    }
}
