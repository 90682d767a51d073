//! Release history, kept in the cluster so that Jenkins, a laptop and cron
//! see the same: one ConfigMap per release in the environment's namespace
//! (`slipway-release-<revision>`), labelled so it can be listed, holding
//! the release record as JSON. Revisions are claimed by creating the
//! ConfigMap, which the API server does at most once per name.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Labels of a release record.
pub const RELEASE_LABEL: &str = "slipway.dev/release-of";
pub const REVISION_LABEL: &str = "slipway.dev/revision";
/// The record's key in the ConfigMap's data.
const DATA_KEY: &str = "release.json";
/// Version of the record's format.
pub const RECORD_VERSION: u32 = 1;

/// How a release came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Deploy,
    Promote,
    Rollback,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Still going (or its run died: see `finished_at`).
    Running,
    Succeeded,
    Failed,
    /// It succeeded, and was later undone by a rollback.
    RolledBack,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled_back",
        }
    }
}

/// One release of one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub format_version: u32,
    pub revision: u64,
    pub environment: String,
    pub kind: Kind,
    /// `sha256:…`
    pub digest: String,
    /// `REPOSITORY_URI@sha256:…`, as the pods run it.
    pub image: String,
    pub tag: Option<String>,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub user: String,
    pub host: String,
    pub build_url: Option<String>,
    pub job_name: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub result: Outcome,
    /// The rollout finished and the load balancer's targets were healthy.
    pub verified: bool,
    /// The promotion policy was overridden with `--force`.
    pub forced: bool,
    pub reason: Option<String>,
    /// For a promotion: the environment and revision it came from.
    pub promoted_from: Option<Source>,
    /// For a rollback: the revision whose digest it restored.
    pub rollback_to: Option<u64>,
    /// The address traffic reaches it at (the ALB's host name).
    pub address: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Where a promoted digest was verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub environment: String,
    pub revision: u64,
}

pub fn config_map_name(revision: u64) -> String {
    format!("slipway-release-{revision}")
}

/// The ConfigMap holding a record.
pub fn to_config_map(r: &Release, namespace: &str, resource_version: Option<&str>) -> Value {
    let mut md = json!({
        "name": config_map_name(r.revision),
        "namespace": namespace,
        "labels": {
            RELEASE_LABEL: r.environment,
            REVISION_LABEL: r.revision.to_string(),
            "app.kubernetes.io/managed-by": "slipway",
        },
    });
    if let Some(rv) = resource_version {
        md["resourceVersion"] = json!(rv);
    }
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": md,
        "data": { DATA_KEY: serde_json::to_string_pretty(r).unwrap_or_default() },
    })
}

/// The record in a ConfigMap, or why it cannot be read.
pub fn from_config_map(cm: &Value) -> Result<Release, String> {
    let name = cm
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let text = cm
        .pointer(&format!(
            "/data/{}",
            DATA_KEY.replace('~', "~0").replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("ConfigMap `{name}` has no `{DATA_KEY}`"))?;
    serde_json::from_str(text).map_err(|e| format!("ConfigMap `{name}`: {e}"))
}

/// Records sorted by revision, newest last.
pub fn sorted(mut releases: Vec<Release>) -> Vec<Release> {
    releases.sort_by_key(|r| r.revision);
    releases
}

/// The release running now: the newest that succeeded.
pub fn current(history: &[Release]) -> Option<&Release> {
    history
        .iter()
        .rev()
        .find(|r| r.result == Outcome::Succeeded)
}

/// The release a rollback restores: `to` if given (it must have been
/// verified once), else the newest succeeded release before the current
/// one that runs another digest.
pub fn rollback_target(history: &[Release], to: Option<u64>) -> Result<&Release, String> {
    let cur = current(history);
    if let Some(rev) = to {
        let r = history
            .iter()
            .find(|r| r.revision == rev)
            .ok_or_else(|| format!("there is no revision {rev}"))?;
        if !r.verified || !matches!(r.result, Outcome::Succeeded | Outcome::RolledBack) {
            return Err(format!(
                "revision {rev} {} and was never verified, so it is no release to go back to",
                match r.result {
                    Outcome::Failed => "failed",
                    Outcome::Running => "never finished",
                    _ => "did not succeed",
                }
            ));
        }
        return Ok(r);
    }
    let cur = cur.ok_or("no release has succeeded yet, so there is nothing to roll back from")?;
    history
        .iter()
        .rev()
        .filter(|r| r.revision < cur.revision)
        .find(|r| r.result == Outcome::Succeeded && r.verified && r.digest != cur.digest)
        .ok_or_else(|| {
            format!(
                "no succeeded release before revision {} runs another image",
                cur.revision
            )
        })
}
