//! The Kubernetes ApplySet convention (KEP-3659, as `kubectl apply
//! --prune --applyset` implements it): a parent object names the set with
//! `applyset.kubernetes.io/id`, lists the group-kinds of its members in
//! `applyset.kubernetes.io/contains-group-kinds`, and each member carries
//! `applyset.kubernetes.io/part-of=<id>`. Pruning deletes the members a new
//! apply did not render, and nothing without the label.

use std::collections::BTreeSet;

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const ID_LABEL: &str = "applyset.kubernetes.io/id";
pub const PART_OF_LABEL: &str = "applyset.kubernetes.io/part-of";
pub const TOOLING: &str = "applyset.kubernetes.io/tooling";
pub const GROUP_KINDS: &str = "applyset.kubernetes.io/contains-group-kinds";

/// The parent: a ConfigMap in the environment's namespace.
pub const PARENT_NAME: &str = "slipway-applyset";

/// `applyset-<base64url(sha256(<name>.<namespace>.<kind>.<group>))>-v1`,
/// the id kubectl computes for the same parent.
pub fn id(namespace: &str) -> String {
    let key = format!("{PARENT_NAME}.{namespace}.ConfigMap.");
    let hash = Sha256::digest(key.as_bytes());
    format!(
        "applyset-{}-v1",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash)
    )
}

/// `Kind.group`, or `Kind` for the core group.
pub fn group_kind(api_version: &str, kind: &str) -> String {
    match api_version.split_once('/') {
        Some((group, _)) => format!("{kind}.{group}"),
        None => kind.to_string(),
    }
}

/// `(group, kind)` of a `Kind.group`.
pub fn split_group_kind(gk: &str) -> (String, String) {
    match gk.split_once('.') {
        Some((kind, group)) => (group.to_string(), kind.to_string()),
        None => (String::new(), gk.to_string()),
    }
}

pub fn tooling() -> String {
    format!("slipway/v{}", env!("CARGO_PKG_VERSION"))
}

/// The parent listing `group_kinds`.
pub fn parent(namespace: &str, group_kinds: &BTreeSet<String>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": PARENT_NAME,
            "namespace": namespace,
            "labels": { ID_LABEL: id(namespace) },
            "annotations": {
                TOOLING: tooling(),
                GROUP_KINDS: group_kinds.iter().cloned().collect::<Vec<_>>().join(","),
            },
        },
    })
}

/// The group-kinds a live parent lists.
pub fn listed_group_kinds(parent: &Value) -> BTreeSet<String> {
    parent
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(GROUP_KINDS))
        .and_then(Value::as_str)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The tool that manages a live parent, when it says.
pub fn tooling_of(parent: &Value) -> Option<&str> {
    parent
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(TOOLING))
        .and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_kubectl_format() {
        let id = id("smallcase-develop");
        assert!(id.starts_with("applyset-") && id.ends_with("-v1"));
        // 32 bytes of hash, base64url without padding: 43 characters.
        assert_eq!(id.len(), "applyset-".len() + 43 + "-v1".len());
        assert!(!id.contains('=') && !id.contains('+') && !id.contains('/'));
        assert_ne!(id, super::id("smallcase-green"));
        // What `KUBECTL_APPLYSET=true kubectl apply --applyset=configmap/slipway-applyset
        // -n demo-ns --prune --server-side` (kubectl 1.32) labels its parent with.
        assert_eq!(
            super::id("demo-ns"),
            "applyset-7VomEzPBg536LGU_yKbJOmmkLMFlcDDk-OSt3mtQ6Ko-v1"
        );
    }

    #[test]
    fn group_kinds_round_trip() {
        assert_eq!(group_kind("apps/v1", "Deployment"), "Deployment.apps");
        assert_eq!(group_kind("v1", "Service"), "Service");
        assert_eq!(
            split_group_kind("Ingress.networking.k8s.io"),
            ("networking.k8s.io".into(), "Ingress".into())
        );
        let set: BTreeSet<String> = ["Service".into(), "Deployment.apps".into()].into();
        assert_eq!(listed_group_kinds(&parent("ns", &set)), set);
    }
}
