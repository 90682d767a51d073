//! The stack expanded into every resource of the platform.
//!
//! Attribute names are snake_case forms of the AWS API / Kubernetes fields a
//! provider sends; values known only after apply are references. Ordering
//! that no reference expresses is an explicit `after`. `docs/stack.md` lists
//! the addresses.

mod aws;
mod jenkins;
mod kube;

use serde_json::{Value, json};

use super::Stack;
use crate::addr::{Address, AddressError, Domain};
use crate::resource::{Expr, Resource};

/// Name of the load balancer controller's service account, deployment and
/// RBAC objects, as in the upstream chart.
pub(super) const LBC_NAME: &str = "aws-load-balancer-controller";

/// AZ suffixes in order; `azs` is at most 6.
const AZ_LETTERS: [char; 6] = ['a', 'b', 'c', 'd', 'e', 'f'];

/// Every desired resource of `stack`.
pub(super) fn resources(stack: &Stack) -> Result<Vec<Resource>, AddressError> {
    let mut b = Builder {
        s: stack,
        out: Vec::new(),
    };
    let shared = aws::build(&mut b)?;
    kube::build(&mut b, &shared)?;
    Ok(b.out)
}

/// The addresses later parts of the graph refer to.
pub(super) struct Shared {
    pub vpc: Address,
    pub cluster: Address,
    pub kube_system_profile: Address,
    pub lb_controller_role: Address,
    /// The controller's IAM policy and its attachment to the role: the
    /// controller rolls out after they change, and needs them until it has
    /// cleaned up the load balancers it made.
    pub lb_controller_permissions: Vec<Address>,
}

pub(super) struct Builder<'a> {
    pub s: &'a Stack,
    out: Vec<Resource>,
}

impl Builder<'_> {
    /// Adds a resource; one of a protected environment is protected.
    pub fn push(&mut self, r: Resource) {
        let protected = r.env_opt().is_some_and(|env| {
            self.s
                .environments
                .iter()
                .any(|e| e.name == env && e.protected)
        });
        self.out.push(if protected { r.protect() } else { r });
    }

    /// `<stack>-<suffix>`: the AWS name of a stack-wide resource.
    pub fn named(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.s.name)
    }

    /// AZ name and address suffix of each AZ, in order.
    pub fn azs(&self) -> Vec<(char, String)> {
        AZ_LETTERS
            .iter()
            .take(self.s.network.azs)
            .map(|l| (*l, format!("{}{l}", self.s.region)))
            .collect()
    }

    /// The tags every AWS resource carries, plus `extra`.
    pub fn tags(&self, addr: &Address, name: &str, extra: &[(String, String)]) -> Expr {
        let mut tags = self.s.tags.clone();
        tags.insert("Name".to_string(), name.to_string());
        tags.insert("slipway:stack".to_string(), self.s.name.clone());
        tags.insert("slipway:address".to_string(), addr.to_string());
        for (k, v) in extra {
            tags.insert(k.clone(), v.clone());
        }
        Expr::from(tags)
    }

    /// `aws`, `aws-cn` or `aws-us-gov`: the ARN partition of the region.
    pub fn partition(&self) -> &'static str {
        super::partition_of(&self.s.region)
    }

    /// The ARN of an AWS managed IAM policy.
    pub fn managed_policy(&self, name: &str) -> String {
        format!("arn:{}:iam::aws:policy/{name}", self.partition())
    }
}

pub(super) fn aws(kind: &str, name: &str) -> Result<Address, AddressError> {
    Address::new(Domain::Aws, kind, name)
}

pub(super) fn k8s(kind: &str, name: &str) -> Result<Address, AddressError> {
    Address::new(Domain::K8s, kind, name)
}

pub(super) fn lit(v: Value) -> Expr {
    Expr::Lit(v)
}

pub(super) fn list(items: impl IntoIterator<Item = Expr>) -> Expr {
    Expr::List(items.into_iter().collect())
}

pub(super) fn id(addr: &Address) -> Expr {
    Expr::reference(addr, "id")
}

pub(super) fn arn(addr: &Address) -> Expr {
    Expr::reference(addr, "arn")
}

/// An IAM policy document.
pub(super) fn policy(statements: Vec<Expr>) -> Expr {
    Expr::map([
        ("Version", Expr::str("2012-10-17")),
        ("Statement", Expr::List(statements)),
    ])
}

/// A trust policy letting an AWS service assume a role.
pub(super) fn service_trust(service: &str) -> Expr {
    lit(json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sts:AssumeRole",
        }],
    }))
}
