//! A recording fake cloud for tests and for trying slipway without AWS.
//!
//! It keeps every object in memory and, when given a path, in a JSON file so
//! that several slipway processes (and a test between them) see one cloud.
//! It behaves like the real providers where the engine depends on it: ids are
//! assigned by the "cloud", objects are tagged with their address so an
//! interrupted creation is adopted instead of duplicated, reads of deleted
//! objects return `None`, deletes of gone objects succeed. Faults and delays
//! are configured in the file's `faults` section.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DiscoverScope, Discovery, OpContext, Provider, ProviderError, Tagged};
use crate::addr::Address;
use crate::resource::{Attrs, Live, spec_opt};

/// One object in the fake cloud.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FakeObject {
    pub addr: Address,
    pub stack: String,
    pub attrs: Attrs,
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakeCall {
    pub op: String,
    pub addr: String,
    pub mutating: bool,
}

/// Faults to inject.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// `"create:aws.subnet.public_a"` → error message to fail with.
    #[serde(default)]
    pub fail: BTreeMap<String, String>,
    /// Time every mutating call takes, after the object exists in the cloud.
    #[serde(default)]
    pub delay_ms: u64,
    /// Time every read takes.
    #[serde(default)]
    pub read_delay_ms: u64,
}

/// The whole fake cloud.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct World {
    #[serde(default)]
    pub next_id: u64,
    /// Objects by id.
    #[serde(default)]
    pub objects: BTreeMap<String, FakeObject>,
    #[serde(default)]
    pub calls: Vec<FakeCall>,
    #[serde(default)]
    pub faults: Faults,
}

/// Why the fake cloud's file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    #[error("cannot read the simulated cloud `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the simulated cloud `{}` is not valid", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Whether `v` holds the string `id`, anywhere inside.
fn mentions(v: &Value, id: &str) -> bool {
    match v {
        Value::String(s) => s == id,
        Value::Array(items) => items.iter().any(|i| mentions(i, id)),
        Value::Object(map) => map.values().any(|i| mentions(i, id)),
        _ => false,
    }
}

/// The fake provider. Cheap to clone; clones share one world.
#[derive(Debug, Clone)]
pub struct FakeProvider {
    stack: String,
    path: Option<PathBuf>,
    world: Arc<Mutex<World>>,
}

impl FakeProvider {
    /// A fake cloud that lives only in memory.
    pub fn in_memory(stack: &str) -> Self {
        FakeProvider {
            stack: stack.to_string(),
            path: None,
            world: Arc::default(),
        }
    }

    /// A fake cloud persisted at `path` (created when missing).
    pub fn open(stack: &str, path: &Path) -> Result<Self, FakeError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| FakeError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let world = match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|source| FakeError::Parse {
                path: path.to_path_buf(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => World::default(),
            Err(source) => {
                return Err(FakeError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Ok(FakeProvider {
            stack: stack.to_string(),
            path: Some(path.to_path_buf()),
            world: Arc::new(Mutex::new(world)),
        })
    }

    /// A copy of the world as it is now.
    pub fn world(&self) -> World {
        self.lock().clone()
    }

    /// Changes the world (tests use this to change things "behind slipway's back").
    pub fn edit(&self, f: impl FnOnce(&mut World)) {
        let mut w = self.lock();
        f(&mut w);
        self.save(&w);
    }

    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, World> {
        // A panic while holding the lock cannot leave the world half-changed
        // (every change is a single insert/remove), so poisoning is ignored.
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Persists the world; an object the file cannot record would be lost
    /// to the next process, so that is a failure of the operation.
    fn persist(&self, world: &World, addr: &Address) -> Result<(), ProviderError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let text = serde_json::to_string_pretty(world)
            .map_err(|e| ProviderError::new(addr, "FakeCloudUnwritable", e.to_string(), false))?;
        crate::state::local::write_atomic(path, text.as_bytes()).map_err(|e| {
            ProviderError::new(
                addr,
                "FakeCloudUnwritable",
                format!(
                    "{e}: {}",
                    std::error::Error::source(&e)
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ),
                false,
            )
        })
    }

    fn save(&self, world: &World) {
        // Tests' own edits: a failure shows up on their next read.
        let _ = self.persist(world, &Address::domain_wide(crate::addr::Domain::Aws));
    }

    fn record(&self, world: &mut World, op: &str, addr: &Address, mutating: bool) {
        world.calls.push(FakeCall {
            op: op.to_string(),
            addr: addr.to_string(),
            mutating,
        });
    }

    fn fault(&self, world: &World, op: &str, addr: &Address) -> Result<(), ProviderError> {
        match world.faults.fail.get(&format!("{op}:{addr}")) {
            Some(msg) => Err(ProviderError::new(
                addr,
                "InjectedFault",
                msg.clone(),
                false,
            )),
            None => Ok(()),
        }
    }

    async fn delay(&self) {
        let ms = self.lock().faults.delay_ms;
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    fn with_outputs(addr: &Address, id: &str, mut attrs: Attrs) -> Attrs {
        if let Some(spec) = spec_opt(&addr.kind_key()) {
            for out in spec.outputs {
                let v = match *out {
                    "id" => id.to_string(),
                    "arn" => format!("arn:aws:fake:::{}/{id}", addr.kind()),
                    other => format!("{other}-of-{id}"),
                };
                attrs.entry(out.to_string()).or_insert(Value::String(v));
            }
        }
        attrs
    }
}

fn live(id: &str, o: &FakeObject) -> Live {
    Live {
        id: id.to_string(),
        attrs: o.attrs.clone(),
    }
}

#[async_trait]
impl Provider for FakeProvider {
    async fn read(&self, addr: &Address, prior: &Live) -> Result<Option<Live>, ProviderError> {
        let ms = self.lock().faults.read_delay_ms;
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let mut w = self.lock();
        self.record(&mut w, "read", addr, false);
        self.fault(&w, "read", addr)?;
        let found = w.objects.get(&prior.id).map(|o| live(&prior.id, o));
        self.persist(&w, addr)?;
        Ok(found)
    }

    async fn discover(&self, scope: &DiscoverScope<'_>) -> Result<Discovery, ProviderError> {
        let w = self.lock();
        Ok(Discovery {
            tagged: w
                .objects
                .iter()
                .filter(|(id, o)| o.stack == scope.stack && !scope.known.contains(*id))
                .map(|(id, o)| Tagged {
                    addr: o.addr.clone(),
                    id: id.clone(),
                    claims_address: true,
                })
                .collect(),
            ..Discovery::default()
        })
    }

    async fn create(
        &self,
        addr: &Address,
        desired: &Attrs,
        ctx: &OpContext<'_>,
    ) -> Result<Live, ProviderError> {
        let created = {
            let mut w = self.lock();
            self.record(&mut w, "create", addr, true);
            self.fault(&w, "create", addr)?;
            // An object tagged with this address was left by an interrupted run: adopt it.
            let existing = w
                .objects
                .iter()
                .find(|(id, o)| {
                    &o.addr == addr
                        && o.stack == self.stack
                        && ctx.replacing_opt() != Some(id.as_str())
                })
                .map(|(id, _)| id.clone());
            let id = match existing {
                Some(id) => id,
                None => {
                    w.next_id += 1;
                    format!("{}-{:04}", addr.kind().replace('_', "-"), w.next_id)
                }
            };
            let attrs = Self::with_outputs(addr, &id, desired.clone());
            let object = FakeObject {
                addr: addr.clone(),
                stack: self.stack.clone(),
                attrs,
            };
            let created = live(&id, &object);
            w.objects.insert(id, object);
            self.persist(&w, addr)?;
            created
        };
        ctx.status("waiting until ready");
        self.delay().await;
        Ok(created)
    }

    async fn update(
        &self,
        addr: &Address,
        prior: &Live,
        desired: &Attrs,
        _ctx: &OpContext<'_>,
    ) -> Result<Live, ProviderError> {
        let updated = {
            let mut w = self.lock();
            self.record(&mut w, "update", addr, true);
            self.fault(&w, "update", addr)?;
            let Some(object) = w.objects.get_mut(&prior.id) else {
                return Err(ProviderError::new(
                    addr,
                    "NotFound",
                    format!("`{}` no longer exists", prior.id),
                    false,
                ));
            };
            for (k, v) in desired {
                object.attrs.insert(k.clone(), v.clone());
            }
            let updated = live(&prior.id, object);
            self.persist(&w, addr)?;
            updated
        };
        self.delay().await;
        Ok(updated)
    }

    async fn delete(
        &self,
        addr: &Address,
        prior: &Live,
        ctx: &OpContext<'_>,
    ) -> Result<(), ProviderError> {
        {
            let mut w = self.lock();
            self.record(&mut w, "delete", addr, true);
            self.fault(&w, "delete", addr)?;
            // Like AWS (`DependencyViolation`): an object another one still
            // refers to by id cannot go.
            if let Some(user) = w.objects.iter().find(|(id, o)| {
                **id != prior.id && o.attrs.values().any(|v| mentions(v, &prior.id))
            }) {
                return Err(ProviderError::new(
                    addr,
                    "DependencyViolation",
                    format!(
                        "`{}` is still in use by `{}` ({})",
                        prior.id, user.1.addr, user.0
                    ),
                    false,
                ));
            }
            w.objects.remove(&prior.id);
            self.persist(&w, addr)?;
        }
        ctx.status("waiting until gone");
        self.delay().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn a(s: &str) -> Address {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn creates_reads_updates_deletes_and_records() {
        let f = FakeProvider::in_memory("s");
        let ctx = OpContext::silent();
        let addr = a("aws.vpc.main");
        let desired: Attrs = [("cidr_block".to_string(), json!("10.0.0.0/16"))].into();
        let created = f.create(&addr, &desired, &ctx).await.unwrap();
        assert_eq!(created.attrs["id"], json!(created.id));
        assert_eq!(
            f.read(&addr, &created).await.unwrap(),
            Some(created.clone())
        );
        let mut changed = desired.clone();
        changed.insert("cidr_block".into(), json!("10.1.0.0/16"));
        let updated = f.update(&addr, &created, &changed, &ctx).await.unwrap();
        assert_eq!(updated.attrs["cidr_block"], json!("10.1.0.0/16"));
        f.delete(&addr, &created, &ctx).await.unwrap();
        assert_eq!(f.read(&addr, &created).await.unwrap(), None);
        f.delete(&addr, &created, &ctx).await.unwrap();
        let ops: Vec<String> = f.calls().iter().map(|c| c.op.clone()).collect();
        assert_eq!(
            ops,
            ["create", "read", "update", "delete", "read", "delete"]
        );
    }

    #[tokio::test]
    async fn adopts_an_object_left_by_an_interrupted_create() {
        let f = FakeProvider::in_memory("s");
        let addr = a("aws.subnet.a");
        let first = f
            .create(&addr, &Attrs::new(), &OpContext::silent())
            .await
            .unwrap();
        let second = f
            .create(&addr, &Attrs::new(), &OpContext::silent())
            .await
            .unwrap();
        assert_eq!(first.id, second.id);
        assert_eq!(f.world().objects.len(), 1);
    }

    #[tokio::test]
    async fn persists_to_its_file_and_injects_faults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloud.json");
        let f = FakeProvider::open("s", &path).unwrap();
        f.edit(|w| {
            w.faults
                .fail
                .insert("create:aws.vpc.bad".into(), "quota exceeded".into());
        });
        let addr = a("aws.vpc.good");
        f.create(&addr, &Attrs::new(), &OpContext::silent())
            .await
            .unwrap();
        let err = f
            .create(&a("aws.vpc.bad"), &Attrs::new(), &OpContext::silent())
            .await
            .unwrap_err();
        assert_eq!(err.code, "InjectedFault");
        let reopened = FakeProvider::open("s", &path).unwrap();
        assert_eq!(reopened.world().objects.len(), 1);
        let none = std::collections::BTreeSet::new();
        let found = |stack| {
            let reopened = &reopened;
            let none = &none;
            async move {
                reopened
                    .discover(&DiscoverScope::everything(stack, none))
                    .await
                    .unwrap()
                    .tagged
                    .len()
            }
        };
        assert_eq!(found("s").await, 1);
        assert_eq!(found("other").await, 0);
    }
}
