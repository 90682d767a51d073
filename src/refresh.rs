//! Refresh: reads every object the state knows from its provider, batched per
//! provider and concurrently across providers, and discovers objects tagged
//! as the stack's that the state does not know. Strictly read-only.

use std::collections::{BTreeMap, BTreeSet};

use crate::addr::Address;
use crate::provider::{ProviderError, Providers};
use crate::resource::Live;
use crate::state::State;

/// What refresh found.
#[derive(Debug, Default)]
pub struct Refreshed {
    /// Every state address, with `None` for objects that are gone.
    pub live: BTreeMap<Address, Option<Live>>,
    /// Tagged objects the state does not know.
    pub unmanaged: BTreeMap<Address, Live>,
}

/// Why refresh failed: every resource that could not be read.
#[derive(Debug)]
pub struct RefreshError {
    pub errors: Vec<ProviderError>,
}

impl std::error::Error for RefreshError {}

impl std::fmt::Display for RefreshError {
    /// One line per distinct failure: an unreachable cluster is one line,
    /// not one per object.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut distinct: Vec<(&str, &str, Vec<&Address>)> = Vec::new();
        for e in &self.errors {
            match distinct
                .iter_mut()
                .find(|(c, m, _)| *c == e.code && *m == e.message)
            {
                Some((_, _, addrs)) => addrs.push(&e.addr),
                None => distinct.push((&e.code, &e.message, vec![&e.addr])),
            }
        }
        write!(
            f,
            "could not read {} resource(s) from the cloud",
            self.errors.len()
        )?;
        for (code, message, addrs) in distinct {
            let who = match addrs.len() {
                1 => format!("`{}`", addrs[0]),
                n => format!("`{}` and {} more", addrs[0], n - 1),
            };
            write!(f, "\n  {who}: {code}: {message}")?;
        }
        Ok(())
    }
}

/// Reads the live objects of everything in `state`.
pub async fn refresh(providers: &Providers, state: &State) -> Result<Refreshed, RefreshError> {
    let mut errors = Vec::new();
    // A connection that lives in a resource (Kubernetes, in the cluster)
    // goes where the state says it is.
    for (addr, r) in state.resources() {
        providers.observed(addr, Some(&r.live()));
    }
    for addr in state.resources().keys() {
        if let Err(e) = providers.for_addr(addr) {
            errors.push(e);
        }
    }
    let known: BTreeSet<String> = state.resources().values().map(|r| r.id.clone()).collect();
    let work = providers.distinct().map(|(provider, serves)| {
        let items: Vec<(Address, Live)> = state
            .resources()
            .iter()
            .filter(|(a, _)| serves(a))
            .map(|(a, r)| (a.clone(), r.live()))
            .collect();
        let known = &known;
        async move {
            // Reads first: a provider connects on first use, and discovery
            // only looks where the state says something is.
            let reads = provider.read_many(&items).await;
            let found = provider.discover(state.stack(), known).await;
            let found = found.map(|objects| {
                objects
                    .into_iter()
                    .filter(|(a, _)| serves(a))
                    .collect::<Vec<_>>()
            });
            (reads, found)
        }
    });
    let results = futures::future::join_all(work).await;

    let mut out = Refreshed::default();
    for (reads, found) in results {
        for (addr, result) in reads {
            match result {
                Ok(live) => {
                    out.live.insert(addr, live);
                }
                Err(e) => errors.push(e),
            }
        }
        match found {
            Ok(objects) => out.unmanaged.extend(
                objects
                    .into_iter()
                    .filter(|(addr, _)| state.get_opt(addr).is_none()),
            ),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(RefreshError { errors })
    }
}
