//! Refresh: reads every object the state knows from its provider, batched per
//! provider and concurrently across providers, and discovers objects tagged
//! as the stack's that the state does not know. Strictly read-only.

use std::collections::BTreeMap;

use crate::addr::{Address, Domain};
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
#[derive(Debug, thiserror::Error)]
#[error("could not read {} resource(s) from the cloud: {}", errors.len(), errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct RefreshError {
    pub errors: Vec<ProviderError>,
}

/// Reads the live objects of everything in `state`.
pub async fn refresh(providers: &Providers, state: &State) -> Result<Refreshed, RefreshError> {
    let mut by_domain: BTreeMap<Domain, Vec<(Address, Live)>> = BTreeMap::new();
    let mut errors = Vec::new();
    for (addr, r) in state.resources() {
        match providers.for_addr(addr) {
            Ok(_) => by_domain
                .entry(addr.domain())
                .or_default()
                .push((addr.clone(), r.live())),
            Err(e) => errors.push(e),
        }
    }
    let reads = by_domain.iter().filter_map(|(domain, items)| {
        let provider = providers
            .domains()
            .find(|(d, _)| *d == domain)
            .map(|(_, p)| p)?;
        Some(async move { provider.read_many(items).await })
    });
    let discovers = providers
        .domains()
        .map(|(domain, p)| async move { (*domain, p.discover(state.stack()).await) });
    let (reads, discovered) = futures::join!(
        futures::future::join_all(reads),
        futures::future::join_all(discovers)
    );

    let mut out = Refreshed::default();
    for (addr, result) in reads.into_iter().flatten() {
        match result {
            Ok(live) => {
                out.live.insert(addr, live);
            }
            Err(e) => errors.push(e),
        }
    }
    for (domain, found) in discovered {
        match found {
            Ok(objects) => out
                .unmanaged
                .extend(objects.into_iter().filter(|(addr, live)| {
                    addr.domain() == domain
                        && !state.resources().values().any(|r| r.id == live.id)
                        && state.get_opt(addr).is_none()
                })),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(RefreshError { errors })
    }
}
