//! Refresh: reads every object the state knows from its provider, batched per
//! provider and concurrently across providers, and discovers objects tagged
//! as the stack's that the state does not know. Strictly read-only.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::addr::Address;
use crate::provider::{DiscoverScope, Discovery, ProviderError, Providers};
use crate::resource::Live;
use crate::state::State;

/// What refresh found.
#[derive(Debug, Default)]
pub struct Refreshed {
    /// Every state address, with `None` for objects that are gone.
    pub live: BTreeMap<Address, Option<Live>>,
    /// What exists beside the state's objects (see [`Discovery`]).
    pub discovered: Discovery,
    /// How long the reads and the discovery took (the slowest provider's).
    pub read_time: Duration,
    pub discover_time: Duration,
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

/// Attributes naming an object that is part of the resource recorded with
/// them, made and deleted with it: an instance's root volume.
const PART_ID_ATTRS: &[&str] = &["root_volume_id"];

/// The ids of everything the state tracks, and of the objects that are part
/// of them; a security-group rule's id lists each rule it stands for.
pub fn known_ids(state: &State) -> BTreeSet<String> {
    state
        .resources()
        .values()
        .flat_map(|r| {
            let parts = PART_ID_ATTRS
                .iter()
                .filter_map(|k| r.attributes.get(*k).and_then(|v| v.as_str()))
                .map(str::to_string);
            std::iter::once(r.id.clone())
                .chain(
                    r.id.contains(',')
                        .then(|| r.id.split(',').map(str::to_string).collect::<Vec<_>>())
                        .into_iter()
                        .flatten(),
                )
                .chain(parts)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The output of `f`, and how long it took.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = f.await;
    (out, started.elapsed())
}

/// Reads the live objects of everything in `state`, then discovers what
/// exists beside them — `thorough`ly for `drift` (see [`DiscoverScope`]).
pub async fn refresh(
    providers: &Providers,
    state: &State,
    thorough: bool,
) -> Result<Refreshed, RefreshError> {
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
    let known = known_ids(state);
    let work = providers.distinct().map(|(provider, serves)| {
        let items: Vec<(Address, Live)> = state
            .resources()
            .iter()
            .filter(|(a, _)| serves(a))
            .map(|(a, r)| (a.clone(), r.live()))
            .collect();
        let known = &known;
        async move {
            // Reads and discovery at once: discovery only looks where the
            // state says something is, which the state, not the reads, says.
            // Discovery's first call goes first: what it finds is read again
            // (a second round), and so waits on its answer.
            let scope = DiscoverScope {
                stack: state.stack(),
                known,
                managed: &items,
                thorough,
            };
            let ((found, discover_time), (reads, read_time)) = futures::join!(
                timed(provider.discover(&scope)),
                timed(provider.read_many(&items))
            );
            let found = found.map(|mut d| {
                // What another provider serves is its to report; kinds
                // slipway does not manage (load balancers) stay.
                d.tagged
                    .retain(|t| serves(&t.addr) || providers.for_addr(&t.addr).is_err());
                d
            });
            (reads, found, read_time, discover_time)
        }
    });
    let results = futures::future::join_all(work).await;

    let mut out = Refreshed::default();
    for (reads, found, read_time, discover_time) in results {
        out.read_time = out.read_time.max(read_time);
        out.discover_time = out.discover_time.max(discover_time);
        for (addr, result) in reads {
            match result {
                Ok(live) => {
                    out.live.insert(addr, live);
                }
                Err(e) => errors.push(e),
            }
        }
        match found {
            Ok(d) => out.discovered.extend(d),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(RefreshError { errors })
    }
}
