//! What the API server serves, learned from discovery once per group
//! version per connection and shared by every reader: the platform's
//! provider and each environment the deploy stage writes to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::discovery::{ApiCapabilities, ApiResource};

type Served = (ApiResource, ApiCapabilities);

#[derive(Default)]
pub struct Kinds {
    served: Mutex<HashMap<(String, String), Served>>,
    /// One discovery of a group version at a time: reads of its kinds that
    /// start together share it.
    discovering: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Kinds {
    /// Forgets what was served (the cluster changed).
    pub fn clear(&self) {
        if let Ok(mut served) = self.served.lock() {
            served.clear();
        }
    }

    fn cached(&self, api_version: &str, kind: &str) -> Option<Served> {
        let key = (api_version.to_string(), kind.to_string());
        self.served.lock().ok().and_then(|k| k.get(&key).cloned())
    }

    /// The kind's resource and capabilities; `None` when the cluster does
    /// not serve it (its group version's discovery document is missing, or
    /// does not list it). The whole group version is fetched at once, so
    /// the other kinds of it a run uses need no discovery of their own; a
    /// kind missing from it is asked again next time (its CRD may be
    /// created meanwhile).
    pub async fn find(
        &self,
        client: &kube::Client,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<Served>, kube::Error> {
        if let Some(found) = self.cached(api_version, kind) {
            return Ok(Some(found));
        }
        let gate = self
            .discovering
            .lock()
            .ok()
            .map(|mut d| d.entry(api_version.to_string()).or_default().clone());
        let _one_at_a_time = match &gate {
            Some(g) => Some(g.lock().await),
            None => None,
        };
        // Found by the discovery this one waited for.
        if let Some(found) = self.cached(api_version, kind) {
            return Ok(Some(found));
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gv = kube::core::GroupVersion::gv(group, version);
        let served = match kube::discovery::pinned_group(client, &gv).await {
            Ok(g) => g.versioned_resources(version),
            // An unserved group version is a 404 of its discovery document.
            Err(kube::Error::Discovery(_)) => return Ok(None),
            Err(e) if super::is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Ok(mut k) = self.served.lock() {
            // A kind served by two resources of one group version is the
            // first one, as the lookup below finds it.
            for (ar, caps) in &served {
                k.entry((api_version.to_string(), ar.kind.clone()))
                    .or_insert_with(|| (ar.clone(), caps.clone()));
            }
        }
        Ok(served.into_iter().find(|(ar, _)| ar.kind == kind))
    }
}
