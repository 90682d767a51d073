//! Resource addresses: `aws.subnet.private_a`, `k8s.namespace.smallcase-blue`,
//! `k8s.deployment.kube-system/aws-load-balancer-controller`.
//!
//! An address is `DOMAIN.KIND.NAME`. The domain says which provider owns the
//! resource, the kind is one of the catalogued resource kinds, and the name is
//! unique within the kind (for namespaced Kubernetes objects it is
//! `namespace/name`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which provider owns a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Domain {
    /// Amazon Web Services.
    Aws,
    /// The Kubernetes API of the stack's cluster.
    K8s,
    /// Things slipway computes locally (certificates).
    Tls,
}

impl Domain {
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Aws => "aws",
            Domain::K8s => "k8s",
            Domain::Tls => "tls",
        }
    }

    pub const ALL: [Domain; 3] = [Domain::Aws, Domain::K8s, Domain::Tls];
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed resource address. Ordered by domain, kind, then name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    domain: Domain,
    kind: String,
    name: String,
}

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("`{0}` is not an address: expected `DOMAIN.KIND.NAME`, e.g. `aws.subnet.private_a`")]
    Shape(String),
    #[error("`{input}` has unknown domain `{domain}`: expected `aws`, `k8s` or `tls`")]
    Domain { input: String, domain: String },
    #[error(
        "`{input}` has kind `{kind}`: a kind is lower-case letters, digits and `_`, starting with a letter"
    )]
    Kind { input: String, kind: String },
    #[error(
        "`{input}` has name `{name}`: a name is letters, digits, `_`, `-`, `.` and at most one `/`"
    )]
    Name { input: String, name: String },
}

impl Address {
    /// Builds an address, checking that kind and name are well-formed.
    pub fn new(domain: Domain, kind: &str, name: &str) -> Result<Self, AddressError> {
        let input = format!("{domain}.{kind}.{name}");
        if !valid_kind(kind) {
            return Err(AddressError::Kind {
                input,
                kind: kind.to_string(),
            });
        }
        if !valid_name(name) {
            return Err(AddressError::Name {
                input,
                name: name.to_string(),
            });
        }
        Ok(Address {
            domain,
            kind: kind.to_string(),
            name: name.to_string(),
        })
    }

    /// `DOMAIN.KIND.ID` for an object that names no address of its own (a
    /// tagged object without an address tag, a load balancer the controller
    /// made): characters a name cannot hold become `_`.
    pub fn made_up(domain: Domain, kind: &str, id: &str) -> Option<Self> {
        let name: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Address::new(domain, kind, &name).ok()
    }

    /// `DOMAIN.all.resources`: names a whole domain in errors of calls that
    /// concern no single resource (discovery).
    pub fn domain_wide(domain: Domain) -> Self {
        Address {
            domain,
            kind: "all".to_string(),
            name: "resources".to_string(),
        }
    }

    pub fn domain(&self) -> Domain {
        self.domain
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `DOMAIN.KIND`, the key of the resource kind catalog.
    pub fn kind_key(&self) -> String {
        format!("{}.{}", self.domain, self.kind)
    }
}

fn valid_kind(kind: &str) -> bool {
    let mut chars = kind.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.matches('/').count() <= 1
        && !name.starts_with('/')
        && !name.ends_with('/')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, '.');
        let (Some(domain), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(AddressError::Shape(s.to_string()));
        };
        let domain = match domain {
            "aws" => Domain::Aws,
            "k8s" => Domain::K8s,
            "tls" => Domain::Tls,
            other => {
                return Err(AddressError::Domain {
                    input: s.to_string(),
                    domain: other.to_string(),
                });
            }
        };
        Address::new(domain, kind, name)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.domain, self.kind, self.name)
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_round_trip() {
        for s in [
            "aws.subnet.private_a",
            "k8s.namespace.smallcase-blue",
            "k8s.deployment.kube-system/aws-load-balancer-controller",
            "k8s.crd.targetgroupbindings.elbv2.k8s.aws",
            "tls.certificate.lb_webhook",
        ] {
            let a: Address = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
        let a: Address = "k8s.crd.targetgroupbindings.elbv2.k8s.aws".parse().unwrap();
        assert_eq!(a.kind(), "crd");
        assert_eq!(a.name(), "targetgroupbindings.elbv2.k8s.aws");
        assert_eq!(a.kind_key(), "k8s.crd");
    }

    #[test]
    fn rejects_malformed_addresses() {
        assert!(matches!(
            "aws.vpc".parse::<Address>(),
            Err(AddressError::Shape(_))
        ));
        assert!(matches!(
            "gcp.vpc.main".parse::<Address>(),
            Err(AddressError::Domain { .. })
        ));
        assert!(matches!(
            "aws.Vpc.main".parse::<Address>(),
            Err(AddressError::Kind { .. })
        ));
        assert!(matches!(
            "aws.vpc.a b".parse::<Address>(),
            Err(AddressError::Name { .. })
        ));
        assert!(matches!(
            "k8s.role.a/b/c".parse::<Address>(),
            Err(AddressError::Name { .. })
        ));
        let err = "aws.vpc".parse::<Address>().unwrap_err().to_string();
        assert!(err.contains("DOMAIN.KIND.NAME"), "{err}");
    }

    #[test]
    fn orders_by_domain_kind_name() {
        let mut v: Vec<Address> = [
            "k8s.namespace.b",
            "aws.vpc.main",
            "aws.subnet.b",
            "aws.subnet.a",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        v.sort();
        let got: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "aws.subnet.a",
                "aws.subnet.b",
                "aws.vpc.main",
                "k8s.namespace.b"
            ]
        );
    }

    #[test]
    fn serde_uses_the_string_form() {
        let a: Address = "aws.vpc.main".parse().unwrap();
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"aws.vpc.main\"");
        let back: Address = serde_json::from_str("\"aws.vpc.main\"").unwrap();
        assert_eq!(back, a);
        assert!(serde_json::from_str::<Address>("\"nope\"").is_err());
    }
}
