//! The application's objects in one environment's namespace, for the deploy
//! stage: server-side apply under the deploy stage's own field manager,
//! reads and lists by label, conditional creates, replaces and deletes.
//! Objects go in and come out as JSON; kube-rs types stay here.

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use serde_json::Value;

use super::{api_error, err, is_not_found, unserved};
use crate::addr::{Address, Domain};
use crate::provider::ProviderError;

/// A connected cluster, scoped to one namespace.
pub struct AppCluster {
    client: kube::Client,
    namespace: String,
    kinds: std::sync::Arc<super::kinds::Kinds>,
}

/// Where a kind lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindScope {
    Namespaced,
    Cluster,
}

/// The address an object's errors are reported against:
/// `k8s.<kind>.<namespace>/<name>`.
pub fn object_addr(kind: &str, namespace: &str, name: &str) -> Address {
    let kind: String = kind
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let kind = if kind.starts_with(|c: char| c.is_ascii_lowercase()) {
        kind
    } else {
        "object".to_string()
    };
    Address::new(Domain::K8s, &kind, &format!("{namespace}/{name}"))
        .or_else(|_| Address::new(Domain::K8s, &kind, namespace))
        .unwrap_or_else(|_| Address::domain_wide(Domain::K8s))
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

impl AppCluster {
    pub(super) fn new(
        client: kube::Client,
        namespace: &str,
        kinds: std::sync::Arc<super::kinds::Kinds>,
    ) -> Self {
        AppCluster {
            client,
            namespace: namespace.to_string(),
            kinds,
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    async fn resource_opt(
        &self,
        addr: &Address,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<(ApiResource, ApiCapabilities)>, ProviderError> {
        self.kinds
            .find(&self.client, api_version, kind)
            .await
            .map_err(|e| api_error(addr, "discovery", &e))
    }

    /// Whether the API server serves this kind, and where; `None` when it
    /// does not.
    pub async fn scope_opt(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<KindScope>, ProviderError> {
        let addr = object_addr(kind, &self.namespace, "discovery");
        Ok(self
            .resource_opt(&addr, api_version, kind)
            .await?
            .map(|(_, caps)| match caps.scope {
                Scope::Namespaced => KindScope::Namespaced,
                Scope::Cluster => KindScope::Cluster,
            }))
    }

    async fn api(
        &self,
        addr: &Address,
        api_version: &str,
        kind: &str,
    ) -> Result<Api<DynamicObject>, ProviderError> {
        let (ar, caps) = self
            .resource_opt(addr, api_version, kind)
            .await?
            .ok_or_else(|| unserved(addr, kind, api_version))?;
        Ok(match caps.scope {
            Scope::Namespaced => Api::namespaced_with(self.client.clone(), &self.namespace, &ar),
            Scope::Cluster => Api::all_with(self.client.clone(), &ar),
        })
    }

    fn target(manifest: &Value) -> (String, String, String) {
        (
            str_at(manifest, "/apiVersion").to_string(),
            str_at(manifest, "/kind").to_string(),
            str_at(manifest, "/metadata/name").to_string(),
        )
    }

    /// Server-side applies `manifest` under `manager`, taking over fields
    /// other managers hold (`--force-conflicts`); with `dry_run` the server
    /// computes the result and persists nothing.
    pub async fn apply(
        &self,
        manifest: &Value,
        manager: &str,
        dry_run: bool,
    ) -> Result<Value, ProviderError> {
        let (api_version, kind, name) = Self::target(manifest);
        let addr = object_addr(&kind, &self.namespace, &name);
        let api = self.api(&addr, &api_version, &kind).await?;
        let mut pp = PatchParams::apply(manager).force();
        pp.dry_run = dry_run;
        let obj = api
            .patch(&name, &pp, &Patch::Apply(manifest))
            .await
            .map_err(|e| api_error(&addr, "server-side apply", &e))?;
        Ok(serde_json::to_value(obj).unwrap_or(Value::Null))
    }

    /// One object, or `None` when it does not exist.
    pub async fn get_opt(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<Value>, ProviderError> {
        let addr = object_addr(kind, &self.namespace, name);
        let api = match self.api(&addr, api_version, kind).await {
            Err(e) if e.code == "KindUnknown" => return Ok(None),
            other => other?,
        };
        api.get_opt(name)
            .await
            .map(|o| o.map(|o| serde_json::to_value(o).unwrap_or(Value::Null)))
            .map_err(|e| api_error(&addr, "get", &e))
    }

    /// The namespace's objects of a kind matching a label selector; none
    /// when the kind is not served.
    pub async fn list(
        &self,
        api_version: &str,
        kind: &str,
        selector: &str,
    ) -> Result<Vec<Value>, ProviderError> {
        let addr = object_addr(kind, &self.namespace, "list");
        let api = match self.api(&addr, api_version, kind).await {
            Err(e) if e.code == "KindUnknown" => return Ok(Vec::new()),
            other => other?,
        };
        let list = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| api_error(&addr, "list", &e))?;
        Ok(list
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
            .collect())
    }

    /// Changes to the namespace's objects of a kind that match the label
    /// and field selectors, from the moment this returns: one `Ok` item
    /// per event. The server ends a watch after `timeout` (and may end it
    /// sooner, or answer an `ERROR` event such as 410 Gone): an `Err` item
    /// or the end of the stream means it stopped, and the caller watches
    /// again. No resource version is given, so the server first sends
    /// the objects that exist as `ADDED` events (Kubernetes' "get state
    /// and start at most recent").
    pub async fn watch(
        &self,
        api_version: &str,
        kind: &str,
        labels: &str,
        fields: &str,
        timeout: std::time::Duration,
    ) -> Result<BoxStream<'static, Result<(), ProviderError>>, ProviderError> {
        let addr = object_addr(kind, &self.namespace, "watch");
        let api = self.api(&addr, api_version, kind).await?;
        // The API server refuses a watch timeout of 295 s or more.
        let secs = timeout.as_secs().clamp(1, 290) as u32;
        let mut wp = WatchParams::default().timeout(secs);
        if !labels.is_empty() {
            wp = wp.labels(labels);
        }
        if !fields.is_empty() {
            wp = wp.fields(fields);
        }
        let events = api
            .watch(&wp, "")
            .await
            .map_err(|e| api_error(&addr, "watch", &e))?;
        Ok(events
            .map(move |event| match event {
                Ok(WatchEvent::Error(status)) => Err(err(
                    &addr,
                    &status.reason,
                    format!("watch: {} (HTTP {})", status.message, status.code),
                    true,
                )),
                Ok(_) => Ok(()),
                Err(e) => Err(api_error(&addr, "watch", &e)),
            })
            .boxed())
    }

    /// Like [`AppCluster::list`], for a `Kind.group` in the group's
    /// preferred version; also returns that apiVersion.
    pub async fn list_group_kind(
        &self,
        group: &str,
        kind: &str,
        selector: &str,
    ) -> Result<(String, Vec<Value>), ProviderError> {
        let api_version = if group.is_empty() {
            "v1".to_string()
        } else {
            let addr = object_addr(kind, &self.namespace, "discovery");
            match kube::discovery::group(&self.client, group).await {
                Ok(g) => format!("{group}/{}", g.preferred_version_or_latest()),
                Err(e) if is_not_found(&e) => return Ok((String::new(), Vec::new())),
                Err(kube::Error::Discovery(_)) => return Ok((String::new(), Vec::new())),
                Err(e) => return Err(api_error(&addr, "discovery", &e)),
            }
        };
        let items = self.list(&api_version, kind, selector).await?;
        Ok((api_version, items))
    }

    /// Creates the object; `AlreadyExists` is an error with that code.
    pub async fn create(&self, manifest: &Value, manager: &str) -> Result<Value, ProviderError> {
        self.write(manifest, manager, false).await
    }

    /// Replaces the object; the manifest's `metadata.resourceVersion` makes
    /// it conditional (a `Conflict` when someone changed it meanwhile).
    pub async fn replace(&self, manifest: &Value, manager: &str) -> Result<Value, ProviderError> {
        self.write(manifest, manager, true).await
    }

    /// POST (create) or PUT (replace) of a whole object.
    async fn write(
        &self,
        manifest: &Value,
        manager: &str,
        replace: bool,
    ) -> Result<Value, ProviderError> {
        let (api_version, kind, name) = Self::target(manifest);
        let addr = object_addr(&kind, &self.namespace, &name);
        let api = self.api(&addr, &api_version, &kind).await?;
        let obj: DynamicObject = serde_json::from_value(manifest.clone())
            .map_err(|e| err(&addr, "InvalidManifest", e.to_string(), false))?;
        let pp = PostParams {
            field_manager: Some(manager.to_string()),
            ..PostParams::default()
        };
        let (op, written) = if replace {
            ("replace", api.replace(&name, &pp, &obj).await)
        } else {
            ("create", api.create(&pp, &obj).await)
        };
        written
            .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
            .map_err(|e| api_error(&addr, op, &e))
    }

    /// Deletes the object (its dependents in the background) if it still is
    /// the one with `uid` and, when given, `resource_version`; `false` when
    /// it was gone already.
    pub async fn delete(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
        uid: Option<&str>,
        resource_version: Option<&str>,
    ) -> Result<bool, ProviderError> {
        let addr = object_addr(kind, &self.namespace, name);
        let api = self.api(&addr, api_version, kind).await?;
        let mut dp = DeleteParams::background();
        if uid.is_some() || resource_version.is_some() {
            dp = dp.preconditions(kube::api::Preconditions {
                uid: uid.map(str::to_string),
                resource_version: resource_version.map(str::to_string),
            });
        }
        match api.delete(name, &dp).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(api_error(&addr, "delete", &e)),
        }
    }
}
