//! Desired resources: what the stack says should exist.

pub mod expr;
pub mod kind;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::addr::{Address, AddressError};
use crate::graph::{Graph, GraphError};
pub use expr::{Expr, Reference, ResolveError};
pub use kind::{Cbd, KindSpec, spec_opt};

/// Resolved attribute values, as read from or written to the cloud.
pub type Attrs = BTreeMap<String, Value>;

/// What a provider reports about an object that exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Live {
    /// The cloud's identifier (VPC id, ARN, `namespace/name`…).
    pub id: String,
    /// Every attribute slipway manages, plus the kind's outputs.
    pub attrs: Attrs,
}

impl Live {
    /// The attribute a read sets on an object that is being deleted (a
    /// namespace terminating): it exists, but not for long.
    pub const DELETING: &'static str = "deleting";

    pub fn is_deleting(&self) -> bool {
        self.attrs.get(Self::DELETING) == Some(&Value::Bool(true))
    }
}

/// One desired resource: its address, attributes and dependencies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    addr: Address,
    attrs: BTreeMap<String, Expr>,
    depends_on: BTreeSet<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    serial_group: Option<String>,
    /// The object this one exists inside (a Fargate profile in its cluster,
    /// a rule in its security group): replacing that replaces this too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    within: Option<Address>,
    /// Deleting or replacing it needs `--allow-protected`: it belongs to a
    /// protected environment or holds data.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    protected: bool,
}

impl Resource {
    pub fn new(addr: Address) -> Self {
        Resource {
            addr,
            attrs: BTreeMap::new(),
            depends_on: BTreeSet::new(),
            env: None,
            serial_group: None,
            within: None,
            protected: false,
        }
    }

    /// Sets a desired attribute.
    pub fn attr(mut self, name: &str, value: impl Into<Expr>) -> Self {
        self.attrs.insert(name.to_string(), value.into());
        self
    }

    /// Adds an ordering dependency that no attribute expresses.
    pub fn after(mut self, addr: &Address) -> Self {
        self.depends_on.insert(addr.clone());
        self
    }

    /// Marks the resource as belonging to one environment (for `destroy --env`).
    pub fn env(mut self, env: &str) -> Self {
        self.env = Some(env.to_string());
        self
    }

    /// Resources sharing a serial group are changed one at a time (EKS allows
    /// one Fargate profile change per cluster at once).
    pub fn serial_group(mut self, group: &str) -> Self {
        self.serial_group = Some(group.to_string());
        self
    }

    /// Declares that this object lives inside `container` and is gone when
    /// it is: a replacement of the container is a replacement of this.
    /// Implies a dependency.
    pub fn within(mut self, container: &Address) -> Self {
        self.depends_on.insert(container.clone());
        self.within = Some(container.clone());
        self
    }

    /// Marks it as needing `--allow-protected` to delete or replace.
    pub fn protect(mut self) -> Self {
        self.protected = true;
        self
    }

    pub fn is_protected(&self) -> bool {
        self.protected
    }

    pub fn within_opt(&self) -> Option<&Address> {
        self.within.as_ref()
    }

    pub fn addr(&self) -> &Address {
        &self.addr
    }

    pub fn attrs(&self) -> &BTreeMap<String, Expr> {
        &self.attrs
    }

    pub fn env_opt(&self) -> Option<&str> {
        self.env.as_deref()
    }

    pub fn serial_group_opt(&self) -> Option<&str> {
        self.serial_group.as_deref()
    }

    /// Explicit dependencies plus every resource an attribute refers to.
    pub fn dependencies(&self) -> BTreeSet<Address> {
        let mut deps = self.depends_on.clone();
        for e in self.attrs.values() {
            deps.extend(e.references().into_iter().map(|r| r.addr.clone()));
        }
        deps
    }

    pub fn spec(&self) -> Option<&'static KindSpec> {
        spec_opt(&self.addr.kind_key())
    }
}

/// Why a set of desired resources is not a valid graph.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error("resource `{0}` is declared twice")]
    Duplicate(Address),
    #[error("resource `{0}` has unknown kind `{1}`")]
    UnknownKind(Address, String),
    #[error("resource `{from}` refers to `{to}`, which the stack does not declare")]
    Dangling { from: Address, to: Address },
    #[error("resource `{addr}` sets `{attr}`, which is computed by the cloud")]
    SetsOutput { addr: Address, attr: String },
    #[error("resource `{from}` refers to `{reference}`, which `{kind}` does not have")]
    UnknownAttr {
        from: Box<Address>,
        reference: Box<Reference>,
        kind: String,
    },
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Address(#[from] AddressError),
}

/// The complete desired state of one stack: a validated, acyclic resource graph.
#[derive(Debug, Clone)]
pub struct Desired {
    resources: BTreeMap<Address, Resource>,
    graph: Graph,
}

impl Desired {
    /// Checks kinds, references and cycles.
    pub fn new(resources: Vec<Resource>) -> Result<Self, DesiredError> {
        let mut map = BTreeMap::new();
        for r in resources {
            let Some(spec) = r.spec() else {
                return Err(DesiredError::UnknownKind(r.addr.clone(), r.addr.kind_key()));
            };
            if let Some(attr) = r.attrs.keys().find(|a| spec.outputs.contains(&a.as_str())) {
                return Err(DesiredError::SetsOutput {
                    addr: r.addr.clone(),
                    attr: attr.clone(),
                });
            }
            if map.contains_key(&r.addr) {
                return Err(DesiredError::Duplicate(r.addr.clone()));
            }
            map.insert(r.addr.clone(), r);
        }
        for r in map.values() {
            for dep in &r.depends_on {
                if !map.contains_key(dep) {
                    return Err(DesiredError::Dangling {
                        from: r.addr.clone(),
                        to: dep.clone(),
                    });
                }
            }
            for e in r.attrs.values() {
                for reference in e.references() {
                    let Some(target) = map.get(&reference.addr) else {
                        return Err(DesiredError::Dangling {
                            from: r.addr.clone(),
                            to: reference.addr.clone(),
                        });
                    };
                    let is_output = target
                        .spec()
                        .is_some_and(|s| s.outputs.contains(&reference.attr.as_str()));
                    if !is_output && !target.attrs.contains_key(&reference.attr) {
                        return Err(DesiredError::UnknownAttr {
                            from: Box::new(r.addr.clone()),
                            reference: Box::new(reference.clone()),
                            kind: reference.addr.kind_key(),
                        });
                    }
                }
            }
        }
        let graph = Graph::new(map.values().map(|r| (r.addr.clone(), r.dependencies())))?;
        Ok(Desired {
            resources: map,
            graph,
        })
    }

    pub fn resources(&self) -> &BTreeMap<Address, Resource> {
        &self.resources
    }

    pub fn get_opt(&self, addr: &Address) -> Option<&Resource> {
        self.resources.get(addr)
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        s.parse().unwrap()
    }

    #[test]
    fn dependencies_include_references() {
        let subnet = Resource::new(a("aws.subnet.a"))
            .attr("vpc_id", Expr::reference(&a("aws.vpc.main"), "id"))
            .after(&a("aws.internet_gateway.main"));
        let deps: Vec<String> = subnet
            .dependencies()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(deps, ["aws.internet_gateway.main", "aws.vpc.main"]);
    }

    #[test]
    fn rejects_dangling_unknown_and_output_attrs() {
        let vpc = Resource::new(a("aws.vpc.main")).attr("cidr_block", "10.0.0.0/16");
        let bad_ref = Resource::new(a("aws.subnet.a"))
            .attr("vpc_id", Expr::reference(&a("aws.vpc.other"), "id"));
        let err = Desired::new(vec![vpc.clone(), bad_ref]).unwrap_err();
        assert!(err.to_string().contains("`aws.vpc.other`"), "{err}");

        let bad_attr = Resource::new(a("aws.subnet.a"))
            .attr("vpc_id", Expr::reference(&a("aws.vpc.main"), "nope"));
        let err = Desired::new(vec![vpc.clone(), bad_attr]).unwrap_err();
        assert!(err.to_string().contains("`aws.vpc.main.nope`"), "{err}");

        let sets_output = Resource::new(a("aws.vpc.x")).attr("id", "vpc-1");
        assert!(matches!(
            Desired::new(vec![sets_output]),
            Err(DesiredError::SetsOutput { .. })
        ));

        let unknown = Resource::new(a("aws.teapot.x"));
        assert!(matches!(
            Desired::new(vec![unknown]),
            Err(DesiredError::UnknownKind(..))
        ));

        assert!(matches!(
            Desired::new(vec![vpc.clone(), vpc]),
            Err(DesiredError::Duplicate(_))
        ));
    }

    #[test]
    fn reports_cycles() {
        let x = Resource::new(a("aws.security_group.x")).after(&a("aws.security_group.y"));
        let y = Resource::new(a("aws.security_group.y")).after(&a("aws.security_group.x"));
        let err = Desired::new(vec![x, y]).unwrap_err().to_string();
        assert!(
            err.contains("aws.security_group.x -> aws.security_group.y -> aws.security_group.x"),
            "{err}"
        );
    }
}
