//! The stack file as written: serde structs that mirror the TOML, with spans
//! on every value a later check may need to point at. Nothing here is
//! validated beyond its TOML type; `validate` turns it into the model.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// Keys of each table, for the unknown/missing key check that runs before
/// serde (so that every unknown key is reported at its own position, and
/// missing keys name their table). Keep in step with the structs below.
pub(super) struct TableKeys {
    pub path: &'static str,
    pub allowed: &'static [&'static str],
    pub required: &'static [&'static str],
}

pub(super) const TOP: TableKeys = TableKeys {
    path: "",
    allowed: &[
        "stack",
        "network",
        "jenkins",
        "registry",
        "cluster",
        "ingress",
        "environments",
        "drift",
        "state",
    ],
    required: &[
        "stack",
        "jenkins",
        "registry",
        "cluster",
        "ingress",
        "environments",
    ],
};
pub(super) const STACK: TableKeys = TableKeys {
    path: "stack",
    allowed: &["name", "region", "tags"],
    required: &["name", "region"],
};
pub(super) const NETWORK: TableKeys = TableKeys {
    path: "network",
    allowed: &["cidr", "azs", "public_subnets", "private_subnets", "nat"],
    required: &[],
};
pub(super) const JENKINS: TableKeys = TableKeys {
    path: "jenkins",
    allowed: &[
        "master",
        "agents",
        "repository_url",
        "ami_parameter",
        "slipway_url",
        "slipway_sha256",
        "webhook_cidrs",
        "scan_interval",
    ],
    required: &["master", "repository_url"],
};
pub(super) const JENKINS_MASTER: TableKeys = TableKeys {
    path: "jenkins.master",
    allowed: &[
        "instance_type",
        "allowed_cidrs",
        "volume_size",
        "home_volume_size",
        "key_name",
        "tls_parameter_path",
    ],
    required: &["allowed_cidrs"],
};
pub(super) const JENKINS_AGENTS: TableKeys = TableKeys {
    path: "jenkins.agents",
    allowed: &["count", "instance_type", "volume_size"],
    required: &[],
};
pub(super) const REGISTRY: TableKeys = TableKeys {
    path: "registry",
    allowed: &[
        "repository",
        "scan_on_push",
        "keep_images",
        "tag_mutability",
    ],
    required: &["repository"],
};
pub(super) const CLUSTER: TableKeys = TableKeys {
    path: "cluster",
    allowed: &[
        "name",
        "version",
        "endpoint_public_access",
        "public_access_cidrs",
        "logging",
        "admins",
        "fargate_profile_quota",
    ],
    required: &["name", "version"],
};
pub(super) const INGRESS: TableKeys = TableKeys {
    path: "ingress",
    allowed: &["controller_version", "iam_policy_file"],
    required: &["controller_version"],
};
pub(super) const STATE: TableKeys = TableKeys {
    path: "state",
    allowed: &["backend", "bucket", "key", "region", "kms_key_id"],
    required: &[],
};
pub(super) const DRIFT: TableKeys = TableKeys {
    path: "drift",
    allowed: &["ignore"],
    required: &[],
};
pub(super) const ENVIRONMENT: TableKeys = TableKeys {
    path: "environments.NAME",
    allowed: &[
        "branch",
        "namespace",
        "overlay",
        "protected",
        "promote_from",
        "min_soak",
    ],
    required: &["branch", "namespace", "overlay"],
};

pub(super) type S<T> = Spanned<T>;
pub(super) type Strings = S<Vec<S<String>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStack {
    pub name: S<String>,
    pub region: S<String>,
    #[serde(default)]
    pub tags: Option<S<BTreeMap<S<String>, S<String>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetwork {
    pub cidr: Option<S<String>>,
    pub azs: Option<S<i64>>,
    pub public_subnets: Option<Strings>,
    pub private_subnets: Option<Strings>,
    pub nat: Option<S<Nat>>,
}

/// How many NAT gateways the private subnets share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Nat {
    /// One NAT gateway in the first AZ; cheaper, but an AZ outage there cuts
    /// every private subnet off the internet.
    #[default]
    #[serde(rename = "single")]
    Single,
    /// One NAT gateway per AZ.
    #[serde(rename = "per_az")]
    PerAz,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJenkins {
    pub master: S<RawMaster>,
    pub agents: Option<S<RawAgents>>,
    pub repository_url: S<String>,
    pub ami_parameter: Option<S<String>>,
    pub slipway_url: Option<S<String>>,
    pub slipway_sha256: Option<S<String>>,
    pub webhook_cidrs: Option<Strings>,
    pub scan_interval: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMaster {
    pub instance_type: Option<S<String>>,
    pub allowed_cidrs: Strings,
    pub volume_size: Option<S<i64>>,
    pub home_volume_size: Option<S<i64>>,
    pub key_name: Option<S<String>>,
    pub tls_parameter_path: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgents {
    pub count: Option<S<i64>>,
    pub instance_type: Option<S<String>>,
    pub volume_size: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    pub repository: S<String>,
    pub scan_on_push: Option<bool>,
    pub keep_images: Option<S<i64>>,
    pub tag_mutability: Option<TagMutability>,
}

/// ECR image tag mutability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum TagMutability {
    #[default]
    #[serde(rename = "IMMUTABLE")]
    Immutable,
    #[serde(rename = "MUTABLE")]
    Mutable,
}

impl TagMutability {
    pub fn as_str(self) -> &'static str {
        match self {
            TagMutability::Immutable => "IMMUTABLE",
            TagMutability::Mutable => "MUTABLE",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub name: S<String>,
    pub version: S<String>,
    pub endpoint_public_access: Option<bool>,
    pub public_access_cidrs: Option<Strings>,
    pub logging: Option<Strings>,
    pub admins: Option<Strings>,
    pub fargate_profile_quota: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub backend: Option<S<String>>,
    pub bucket: Option<S<String>>,
    pub key: Option<S<String>>,
    pub region: Option<S<String>>,
    pub kms_key_id: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrift {
    pub ignore: Option<Strings>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIngress {
    pub controller_version: S<String>,
    pub iam_policy_file: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnvironment {
    pub branch: S<String>,
    pub namespace: S<String>,
    pub overlay: S<String>,
    pub protected: Option<bool>,
    pub promote_from: Option<S<String>>,
    pub min_soak: Option<S<String>>,
}
