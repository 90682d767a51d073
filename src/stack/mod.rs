//! The stack file: TOML schema, offline validation with `file:line:column`
//! diagnostics, and the desired resource graph it expands to.
//!
//! `docs/stack.md` documents every key; keep it in step with `schema.rs`.

mod desired;
mod diag;
pub mod jenkins_release;
pub mod lbc;
mod parse;
mod schema;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

use crate::resource::{Desired, DesiredError};
pub use diag::{Diagnostic, StackError};
pub use schema::{Nat, TagMutability};

/// The Jenkins node label of the build agents.
pub const JENKINS_BUILD_LABEL: &str = "slipway-build";

/// The Jenkins node label of the production agent (made when an
/// environment is protected): only the protected branches' builds and the
/// drift job may run there.
pub const JENKINS_PRODUCTION_LABEL: &str = "slipway-production";

/// A parsed and validated stack file.
#[derive(Debug)]
pub struct Stack {
    path: PathBuf,
    source_sha256: String,
    name: String,
    region: String,
    tags: BTreeMap<String, String>,
    network: Network,
    jenkins: Jenkins,
    registry: Registry,
    cluster: Cluster,
    ingress: &'static lbc::Release,
    ingress_policy: Option<serde_json::Value>,
    environments: Vec<Environment>,
    drift_ignore: Vec<crate::drift::ignore::Pattern>,
    state: StateBackend,
}

/// One deployment environment: a branch deployed into a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    name: String,
    branch: String,
    namespace: String,
    overlay: PathBuf,
    protected: bool,
    promote_from: Option<String>,
    min_soak: Option<std::time::Duration>,
}

impl Environment {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The git branch whose builds deploy here.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The kustomize overlay directory, resolved against the project root.
    pub fn overlay(&self) -> &Path {
        &self.overlay
    }

    /// Whether tearing it down needs an explicit flag.
    pub fn protected(&self) -> bool {
        self.protected
    }

    /// The environment whose verified releases alone may be deployed here.
    pub fn promote_from(&self) -> Option<&str> {
        self.promote_from.as_deref()
    }

    /// How long a digest must have run in `promote_from` before it may come here.
    pub fn min_soak(&self) -> Option<std::time::Duration> {
        self.min_soak
    }
}

/// `[network]`, with defaults applied and subnets carved.
#[derive(Debug, Clone)]
pub struct Network {
    cidr: Ipv4Net,
    azs: usize,
    public: Vec<Ipv4Net>,
    private: Vec<Ipv4Net>,
    nat: Nat,
}

impl Network {
    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    pub fn azs(&self) -> usize {
        self.azs
    }

    /// One per AZ, in AZ order.
    pub fn public_subnets(&self) -> &[Ipv4Net] {
        &self.public
    }

    /// One per AZ, in AZ order.
    pub fn private_subnets(&self) -> &[Ipv4Net] {
        &self.private
    }

    pub fn nat(&self) -> Nat {
        self.nat
    }
}

/// `[jenkins]`, with defaults applied.
#[derive(Debug, Clone)]
struct Jenkins {
    master_instance_type: String,
    allowed_cidrs: Vec<Ipv4Net>,
    master_volume_size: i64,
    /// GiB of the volume `JENKINS_HOME` lives on.
    home_volume_size: i64,
    key_name: Option<String>,
    agent_count: usize,
    agent_instance_type: String,
    agent_volume_size: i64,
    repository_url: String,
    ami_parameter: String,
    /// The slipway binary the agents install.
    slipway: Option<Download>,
    /// Networks whose push webhooks reach the webhook port.
    webhook_cidrs: Vec<Ipv4Net>,
    /// How often the multibranch job scans the repository when no webhook
    /// came: a Jenkins interval such as `1h`.
    scan_interval: String,
    /// SSM path holding `certificate` and `private-key` for the UI; a
    /// self-signed certificate is made at first boot without it.
    tls_parameter_path: Option<String>,
}

/// Where a stack's state lives (`[state]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StateBackend {
    /// `state/<stack>.json` beside `stacks/`, or `--state`.
    #[default]
    Local,
    S3(crate::state::s3::S3Location),
}

/// A file to download and the SHA-256 it must have.
#[derive(Debug, Clone)]
pub(crate) struct Download {
    pub url: String,
    pub sha256: String,
}

/// `[registry]`, with defaults applied.
#[derive(Debug, Clone)]
struct Registry {
    repository: String,
    scan_on_push: bool,
    keep_images: i64,
    tag_mutability: TagMutability,
}

/// `[cluster]`, with defaults applied.
#[derive(Debug, Clone)]
struct Cluster {
    name: String,
    version: String,
    endpoint_public_access: bool,
    public_access_cidrs: Vec<Ipv4Net>,
    logging: Vec<String>,
    /// IAM role or user ARNs given cluster-admin through access entries.
    admins: Vec<String>,
    /// The account's quota of Fargate profiles per cluster (EKS's default
    /// is 10; it can be raised through Service Quotas).
    fargate_profile_quota: usize,
}

/// `aws`, `aws-cn` or `aws-us-gov`: the ARN partition of a region.
pub(crate) fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

impl Stack {
    /// Reads, parses and validates; collects all problems, not just the first.
    pub fn load(path: &Path) -> Result<Stack, StackError> {
        match std::fs::read_to_string(path) {
            Ok(source) => Stack::parse(path, &source),
            Err(e) => Err(StackError::new(vec![Diagnostic {
                file: path.to_path_buf(),
                line: 1,
                column: 1,
                message: format!("cannot read the stack file: {e}"),
                hint: Some(
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        "a stack file is TOML, which is UTF-8 text: save it as UTF-8 (docs/stack.md)"
                    } else {
                        "check the path; stack files live under `stacks/`"
                    }
                    .to_string(),
                ),
            }])),
        }
    }

    /// Same as [`Stack::load`] from a string; `path` is used in messages and to
    /// resolve overlay paths (see [`Environment::overlay`]).
    pub fn parse(path: &Path, source: &str) -> Result<Stack, StackError> {
        let mut sink = diag::Sink::new(path, source);
        let doc = parse::parse(&mut sink, source);
        let model = validate::validate(&mut sink, doc, path);
        sink.finish()?;
        let Some(m) = model else {
            // validate() returns None only after reporting a problem.
            return Err(StackError::new(vec![Diagnostic {
                file: path.to_path_buf(),
                line: 1,
                column: 1,
                message: "the stack file is incomplete".to_string(),
                hint: Some("see docs/stack.md for the required tables".to_string()),
            }]));
        };
        Ok(Stack {
            path: path.to_path_buf(),
            source_sha256: hex(&Sha256::digest(source.as_bytes())),
            name: m.name,
            region: m.region,
            tags: m.tags,
            network: m.network,
            jenkins: m.jenkins,
            registry: m.registry,
            cluster: m.cluster,
            ingress: m.ingress,
            ingress_policy: m.ingress_policy,
            environments: m.environments,
            drift_ignore: m.drift_ignore,
            state: m.state,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The project directory: the parent of the `stacks/` directory holding
    /// the stack file, else the stack file's own directory. Overlays and the
    /// default state directory are relative to it.
    pub fn project_root(&self) -> PathBuf {
        validate::project_root(&self.path)
    }

    /// Hex SHA-256 of the file contents, so a saved plan can tell whether the
    /// stack it was made from has changed.
    pub fn source_sha256(&self) -> &str {
        &self.source_sha256
    }

    /// In file order.
    pub fn environments(&self) -> &[Environment] {
        &self.environments
    }

    pub fn environment_opt(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.name == name)
    }

    /// The environment that deploys `branch`, if any.
    pub fn environment_for_branch_opt(&self, branch: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.branch == branch)
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    /// `[state]`: where the state lives.
    pub fn state_backend(&self) -> &StateBackend {
        &self.state
    }

    /// `[drift] ignore`: accepted drift.
    pub fn drift_ignore(&self) -> &[crate::drift::ignore::Pattern] {
        &self.drift_ignore
    }

    /// The EKS cluster's name.
    pub fn cluster_name(&self) -> &str {
        &self.cluster.name
    }

    /// The ECR repository's name.
    pub fn repository_name(&self) -> &str {
        &self.registry.repository
    }

    /// `[stack] tags`, added to every AWS resource.
    pub fn tags(&self) -> &BTreeMap<String, String> {
        &self.tags
    }

    /// The pinned AWS Load Balancer Controller release.
    pub fn ingress_controller(&self) -> &'static lbc::Release {
        self.ingress
    }

    /// The full desired resource graph of the platform.
    // `DesiredError` is large because of `resource::DesiredError::UnknownAttr`;
    // boxing belongs there, not here.
    pub fn desired(&self) -> Result<Desired, DesiredError> {
        Desired::new(desired::resources(self)?)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests;
