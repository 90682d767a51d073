//! The provider seam: the only place cloud SDK types may live. The engine
//! talks to every cloud through [`Provider`].

pub mod aws;
pub mod fake;
pub mod kube;
pub mod tls;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::addr::Address;
use crate::resource::{Attrs, Live};

/// A per-resource failure: which resource, the cloud's error code, and
/// whether trying again can help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{addr}`: {code}: {message}{}", if *.retryable { " (temporary; running again may succeed)" } else { "" })]
pub struct ProviderError {
    pub addr: Address,
    /// The AWS or Kubernetes error code (`ResourceInUseException`, `Conflict`…).
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

impl ProviderError {
    pub fn new(addr: &Address, code: &str, message: impl Into<String>, retryable: bool) -> Self {
        ProviderError {
            addr: addr.clone(),
            code: code.to_string(),
            message: message.into(),
            retryable,
        }
    }
}

/// Lets a long operation report what it is waiting for.
#[derive(Clone, Copy)]
pub struct OpContext<'a> {
    status: &'a (dyn Fn(&str) + Send + Sync),
    allow_data_loss: bool,
    replacing: Option<&'a str>,
    warn: Option<&'a (dyn Fn(&str) + Send + Sync)>,
}

impl<'a> OpContext<'a> {
    pub fn new(status: &'a (dyn Fn(&str) + Send + Sync)) -> Self {
        OpContext {
            status,
            allow_data_loss: false,
            replacing: None,
            warn: None,
        }
    }

    /// A context that reports nowhere.
    pub fn silent() -> OpContext<'static> {
        OpContext {
            status: &|_| {},
            allow_data_loss: false,
            replacing: None,
            warn: None,
        }
    }

    /// The run was given `--allow-protected`: a delete may take data with
    /// it (an image repository's images).
    pub fn allowing_data_loss(mut self, allow: bool) -> Self {
        self.allow_data_loss = allow;
        self
    }

    pub fn allows_data_loss(&self) -> bool {
        self.allow_data_loss
    }

    /// This create makes the replacement of the object `id`, which still
    /// exists (carrying the same address tag): it must not be adopted.
    pub fn replacing(mut self, id: Option<&'a str>) -> Self {
        self.replacing = id;
        self
    }

    pub fn replacing_opt(&self) -> Option<&str> {
        self.replacing
    }

    /// Where warnings go: the run's report, which the user always sees.
    pub fn warning_to(mut self, warn: &'a (dyn Fn(&str) + Send + Sync)) -> Self {
        self.warn = Some(warn);
        self
    }

    /// Something the user must know although the operation succeeds (an
    /// OIDC provider registered without a thumbprint).
    pub fn warn(&self, message: &str) {
        (self.status)(&format!("warning: {message}"));
        if let Some(w) = self.warn {
            w(message);
        }
    }

    /// Reports progress, e.g. "waiting for ACTIVE (CREATING)".
    pub fn status(&self, message: &str) {
        (self.status)(message)
    }
}

/// One cloud (AWS, Kubernetes, local TLS) able to read and change resources.
/// Reads return `Ok(None)` when the object is gone; absence is not an error.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Reads one object.
    async fn read(&self, addr: &Address, prior: &Live) -> Result<Option<Live>, ProviderError>;

    /// Reads many objects; providers override this to batch calls per type.
    async fn read_many(
        &self,
        items: &[(Address, Live)],
    ) -> Vec<(Address, Result<Option<Live>, ProviderError>)> {
        let reads = items
            .iter()
            .map(|(addr, prior)| async move { (addr.clone(), self.read(addr, prior).await) });
        futures::future::join_all(reads).await
    }

    /// What exists beside the state's objects: objects tagged or labelled
    /// as `scope.stack`'s whose ids the state does not know and, when
    /// thorough, members of managed collections the state does not know and
    /// what the load balancer controller made. Strictly read-only.
    async fn discover(&self, scope: &DiscoverScope<'_>) -> Result<Discovery, ProviderError>;

    /// Creates the object, or adopts one an interrupted earlier run created.
    async fn create(
        &self,
        addr: &Address,
        desired: &Attrs,
        ctx: &OpContext<'_>,
    ) -> Result<Live, ProviderError>;

    /// Changes in place the attributes that differ.
    async fn update(
        &self,
        addr: &Address,
        prior: &Live,
        desired: &Attrs,
        ctx: &OpContext<'_>,
    ) -> Result<Live, ProviderError>;

    /// Deletes the object and waits until it is gone; an object already gone is success.
    async fn delete(
        &self,
        addr: &Address,
        prior: &Live,
        ctx: &OpContext<'_>,
    ) -> Result<(), ProviderError>;

    /// About how long creating (or, with `deleting`, deleting) `addr`
    /// usually takes, waits included. Only a guide to the executor's order:
    /// of the operations ready to start, the one heading the longest chain
    /// of expected work goes first.
    fn expected_duration(&self, _addr: &Address, _deleting: bool) -> Duration {
        Duration::from_secs(1)
    }

    /// Hears what `addr` (of any provider) is now — `None`: deleted — from
    /// the state as loaded and after each change, so a provider whose
    /// connection lives in another resource (Kubernetes, in the EKS
    /// cluster) follows it when it is replaced.
    fn observed(&self, _addr: &Address, _live: Option<&Live>) {}
}

/// Where [`Provider::discover`] looks.
pub struct DiscoverScope<'a> {
    pub stack: &'a str,
    /// The id of every object the state tracks (any provider).
    pub known: &'a BTreeSet<String>,
    /// The state's objects this provider serves, as last recorded.
    pub managed: &'a [(Address, Live)],
    /// Every service and every managed collection (`drift`, the end of a
    /// destroy), or only what a plan needs (tagged EC2 objects, labelled
    /// Kubernetes objects).
    pub thorough: bool,
}

impl<'a> DiscoverScope<'a> {
    /// Everything tagged as `stack`'s, none of it known.
    pub fn everything(stack: &'a str, none: &'a BTreeSet<String>) -> Self {
        DiscoverScope {
            stack,
            known: none,
            managed: &[],
            thorough: true,
        }
    }
}

/// What [`Provider::discover`] found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Discovery {
    pub tagged: Vec<Tagged>,
    pub extras: Vec<Extra>,
    pub controller: Vec<ControllerMade>,
}

impl Discovery {
    pub fn extend(&mut self, other: Discovery) {
        self.tagged.extend(other.tagged);
        self.extras.extend(other.extras);
        self.controller.extend(other.controller);
    }
}

/// An object tagged (or labelled) as the stack's that the state does not
/// track, by the address it claims. Without an address tag, `addr` is made
/// from its kind and id and `claims_address` is false.
#[derive(Debug, Clone, PartialEq)]
pub struct Tagged {
    pub addr: Address,
    pub id: String,
    pub claims_address: bool,
}

/// A member of a managed collection the state does not know: a rule added
/// to a managed security group, a policy attached to a managed role, a
/// Fargate profile or access entry added to the managed cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Extra {
    /// The managed object holding it.
    pub of: Address,
    /// Which of its collections (`rules`, `attached_policies`…).
    pub collection: String,
    pub id: String,
    /// What it is, as read.
    pub detail: serde_json::Value,
}

/// A load balancer, target group or security group the load balancer
/// controller made for the stack's cluster, and what it was made for.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerMade {
    /// `load_balancer`, `target_group` or `security_group`.
    pub kind: &'static str,
    /// ARN or id.
    pub id: String,
    pub name: String,
    /// The Ingress (`namespace/name`), IngressGroup (its name) or Service
    /// (`namespace/name`) it fronts, from its tags.
    pub fronts: Option<Fronts>,
}

/// What a controller-made object fronts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fronts {
    Ingress(String),
    IngressGroup(String),
    Service(String),
}

/// The providers of one run. Each address goes to the provider registered
/// for the longest prefix of its kind key (`aws.vpc` wins over `aws.`, which
/// wins over ``, the catch-all).
#[derive(Clone, Default)]
pub struct Providers {
    routes: Vec<(String, usize)>,
    providers: Vec<Arc<dyn Provider>>,
}

impl Providers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes kinds starting with `prefix` (`aws.eks_cluster`, `k8s`, or ``
    /// for everything) to `provider`.
    pub fn with(mut self, prefix: &str, provider: Arc<dyn Provider>) -> Self {
        let index = match self
            .providers
            .iter()
            .position(|p| Arc::ptr_eq(p, &provider))
        {
            Some(i) => i,
            None => {
                self.providers.push(provider);
                self.providers.len() - 1
            }
        };
        self.routes.retain(|(p, _)| p != prefix);
        self.routes.push((prefix.to_string(), index));
        self
    }

    fn index_for(&self, addr: &Address) -> Option<usize> {
        let key = addr.kind_key();
        self.routes
            .iter()
            .filter(|(prefix, _)| key.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, i)| *i)
    }

    /// The provider for an address, or an error naming what is missing.
    pub fn for_addr(&self, addr: &Address) -> Result<&Arc<dyn Provider>, ProviderError> {
        self.index_for(addr)
            .map(|i| &self.providers[i])
            .ok_or_else(|| {
                ProviderError::new(
                    addr,
                    "NoProvider",
                    format!(
                        "this version of slipway has no provider for `{}` resources",
                        addr.kind_key()
                    ),
                    false,
                )
            })
    }

    /// Tells every provider what `addr` is now (see [`Provider::observed`]).
    pub fn observed(&self, addr: &Address, live: Option<&Live>) {
        for p in &self.providers {
            p.observed(addr, live);
        }
    }

    /// Each distinct provider once, with a predicate telling which addresses it serves.
    pub fn distinct(
        &self,
    ) -> impl Iterator<Item = (&Arc<dyn Provider>, impl Fn(&Address) -> bool + '_)> {
        self.providers
            .iter()
            .enumerate()
            .map(move |(i, p)| (p, move |a: &Address| self.index_for(a) == Some(i)))
    }
}
