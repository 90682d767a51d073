//! One deploy per environment at a time: a `coordination.k8s.io/v1` Lease
//! in the environment's namespace, as Kubernetes' own leader election uses
//! one. The holder renews it while it runs; a lease not renewed within its
//! duration is expired and may be taken over. Every write is conditional
//! (create, or replace at the resourceVersion read), so two runs never
//! both believe they hold it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::DeployError;
use crate::provider::kube::app::AppCluster;

pub const LEASE_NAME: &str = "slipway-deploy";
pub const API_VERSION: &str = "coordination.k8s.io/v1";
pub const KIND: &str = "Lease";
const MANAGER: &str = super::FIELD_MANAGER;
/// How long a lease lasts without renewal.
const LEASE_SECONDS: i64 = 30;
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// A held lock; renewed in the background until released.
pub struct Lock {
    cluster: Arc<AppCluster>,
    /// The Lease as last written by us.
    lease: Arc<Mutex<Value>>,
    renewer: tokio::task::JoinHandle<()>,
}

fn lease(namespace: &str, holder: &str, acquired: &str, rv: Option<&str>) -> Value {
    let mut v = json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": LEASE_NAME, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "slipway"}},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": LEASE_SECONDS,
            "acquireTime": acquired,
            "renewTime": crate::clock::now_micro(),
        },
    });
    if let Some(rv) = rv {
        v["metadata"]["resourceVersion"] = json!(rv);
    }
    v
}

fn micro_secs(v: &Value, field: &str) -> Option<i64> {
    v.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_str)
        .and_then(crate::clock::parse_rfc3339_opt)
}

/// Who holds a live lease and for how long, or `None` when it has expired.
fn live_holder(l: &Value, now: i64) -> Option<(String, i64)> {
    let holder = l
        .pointer("/spec/holderIdentity")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())?;
    let renewed = micro_secs(l, "renewTime").or_else(|| micro_secs(l, "acquireTime"))?;
    let duration = l
        .pointer("/spec/leaseDurationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(LEASE_SECONDS);
    if renewed + duration < now {
        return None;
    }
    let since = micro_secs(l, "acquireTime").unwrap_or(renewed);
    Some((holder.to_string(), now - since))
}

fn rv(v: &Value) -> Option<String> {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Takes the environment's lock, waiting up to `wait` for a holder to let
/// go; `on_wait` hears who it waits for.
pub async fn acquire(
    cluster: Arc<AppCluster>,
    environment: &str,
    holder: &str,
    wait: Duration,
    cancel: &AtomicBool,
    lost: Arc<AtomicBool>,
    on_wait: &(dyn Fn(&str) + Send + Sync),
) -> Result<Lock, DeployError> {
    let ns = cluster.namespace().to_string();
    let started = tokio::time::Instant::now();
    // A holder's clock may differ from ours: a lease counts as expired only
    // when its times say so and we have also seen it unchanged for its
    // whole duration, as client-go's leader election judges it.
    let mut seen: Option<(String, tokio::time::Instant)> = None;
    loop {
        let now_text = crate::clock::now_micro();
        match cluster
            .create(&lease(&ns, holder, &now_text, None), MANAGER)
            .await
        {
            Ok(l) => return Ok(start(cluster, l, lost)),
            Err(e) if e.code == "AlreadyExists" => {}
            Err(e) => return Err(e.into()),
        }
        let Some(cur) = cluster.get_opt(API_VERSION, KIND, LEASE_NAME).await? else {
            continue; // released meanwhile
        };
        let version = rv(&cur).unwrap_or_default();
        let unchanged_since = match &seen {
            Some((v, at)) if *v == version => *at,
            _ => {
                let now = tokio::time::Instant::now();
                seen = Some((version.clone(), now));
                now
            }
        };
        let duration = cur
            .pointer("/spec/leaseDurationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(LEASE_SECONDS)
            .max(0) as u64;
        let holder_empty = cur
            .pointer("/spec/holderIdentity")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        let observed_stale = unchanged_since.elapsed() >= Duration::from_secs(duration);
        let live = live_holder(&cur, crate::clock::now_unix())
            .filter(|_| !observed_stale)
            .or_else(|| {
                // Expired by its times, but renewed before our eyes: alive.
                (!holder_empty && !observed_stale).then(|| {
                    (
                        cur.pointer("/spec/holderIdentity")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                            .to_string(),
                        0,
                    )
                })
            });
        match live {
            None => {
                // Expired (or released by emptying it): take it over, if
                // nobody else does first.
                let took = cluster
                    .replace(&lease(&ns, holder, &now_text, rv(&cur).as_deref()), MANAGER)
                    .await;
                match took {
                    Ok(l) => return Ok(start(cluster, l, lost)),
                    Err(e) if e.code == "Conflict" || e.code == "NotFound" => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Some((who, held)) => {
                if cancel.load(Ordering::SeqCst) {
                    return Err(DeployError::Interrupted);
                }
                if started.elapsed() >= wait {
                    return Err(DeployError::Locked {
                        environment: environment.to_string(),
                        holder: who,
                        held_secs: held,
                        waited_secs: wait.as_secs(),
                    });
                }
                on_wait(&format!(
                    "waiting for the deploy lock of `{environment}`, held by {who} for {}",
                    crate::clock::human_duration(held)
                ));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

fn start(cluster: Arc<AppCluster>, held: Value, lost: Arc<AtomicBool>) -> Lock {
    let lease_cell = Arc::new(Mutex::new(held));
    let (c, l) = (cluster.clone(), lease_cell.clone());
    let renewer = tokio::spawn(async move {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            let mut cur = l.lock().await;
            let mut next = cur.clone();
            next["spec"]["renewTime"] = json!(crate::clock::now_micro());
            match c.replace(&next, MANAGER).await {
                Ok(written) => {
                    *cur = written;
                    last_renewed = tokio::time::Instant::now();
                }
                // Someone took it over or removed it: this run no longer
                // holds the lock and must stop writing.
                Err(e) if e.code == "Conflict" || e.code == "NotFound" => {
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
                Err(_) if last_renewed.elapsed() >= Duration::from_secs(LEASE_SECONDS as u64) => {
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
                Err(_) => {}
            }
        }
    });
    Lock {
        cluster,
        lease: lease_cell,
        renewer,
    }
}

impl Lock {
    /// Stops renewing and deletes the Lease, if it still is ours.
    pub async fn release(self) {
        self.renewer.abort();
        let cur = self.lease.lock().await;
        let uid = cur.pointer("/metadata/uid").and_then(Value::as_str);
        let holder = cur.pointer("/spec/holderIdentity").and_then(Value::as_str);
        let deleted = self
            .cluster
            .delete(API_VERSION, KIND, LEASE_NAME, uid, rv(&cur).as_deref())
            .await;
        // A renewal may have landed after the version we kept: delete it if
        // it is still ours.
        if matches!(&deleted, Err(e) if e.code == "Conflict")
            && let Ok(Some(now)) = self.cluster.get_opt(API_VERSION, KIND, LEASE_NAME).await
            && now.pointer("/spec/holderIdentity").and_then(Value::as_str) == holder
        {
            let _ = self
                .cluster
                .delete(
                    API_VERSION,
                    KIND,
                    LEASE_NAME,
                    now.pointer("/metadata/uid").and_then(Value::as_str),
                    rv(&now).as_deref(),
                )
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_not_renewed_in_time_has_no_holder() {
        let l = json!({"spec": {"holderIdentity": "a", "leaseDurationSeconds": 30,
            "acquireTime": "2026-12-01T10:00:00.000000Z", "renewTime": "2026-12-01T10:05:00.000000Z"}});
        let renewed = crate::clock::parse_rfc3339_opt("2026-12-01T10:05:00Z").unwrap();
        assert_eq!(live_holder(&l, renewed + 10), Some(("a".into(), 310)));
        assert_eq!(live_holder(&l, renewed + 31), None);
        assert_eq!(live_holder(&json!({"spec": {}}), renewed), None);
    }
}
