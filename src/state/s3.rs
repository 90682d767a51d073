//! State in S3, for teams, CI and cron sharing one stack: the state object
//! is written only conditionally on the version this run read (`If-Match`
//! on its ETag; `If-None-Match: *` for the first), and the lock is a second
//! object created with `If-None-Match: *`, holding its holder and a lease
//! the holder renews by conditional overwrites. A lock whose lease expired
//! is stale; taking it over, renewing it and releasing it are all
//! conditional on the ETag read, so a run can only ever remove or replace
//! the lock it looked at.
//!
//! The S3 calls themselves are in `provider::aws::object_store`, which
//! runs them on a small runtime of its own so that this backend is called
//! synchronously, like the local one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use crate::provider::aws::object_store::{BucketSpec, Object, ObjectStore};

use super::lock::{LockError, LockGuard, LockInfo, Unlocked};
use super::{State, StateError};
use crate::clock;

/// Where the state lives in S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    pub key: String,
    pub region: String,
    pub kms_key_id: Option<String>,
}

impl S3Location {
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    pub fn lock_key(&self) -> String {
        format!("{}.lock", self.key)
    }

    fn lock_url(&self) -> PathBuf {
        PathBuf::from(format!("s3://{}/{}", self.bucket, self.lock_key()))
    }

    fn url_path(&self) -> PathBuf {
        PathBuf::from(self.url())
    }
}

/// The S3 backend.
pub struct S3Backend {
    at: S3Location,
    store: ObjectStore,
    /// The ETag of the state object as this run last read or wrote it;
    /// `Some(None)` once it is known not to exist.
    etag: Mutex<Option<Option<String>>>,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend").field("at", &self.at).finish()
    }
}

fn io(action: &'static str, at: PathBuf, detail: impl std::fmt::Display) -> StateError {
    StateError::Io {
        action,
        path: at,
        source: std::io::Error::other(detail.to_string()),
    }
}

impl S3Backend {
    /// Connects with the standard credential chain (and `AWS_ENDPOINT_URL`
    /// or `AWS_ENDPOINT_URL_S3`); nothing is called until it is used.
    pub fn new(at: S3Location) -> Result<Self, StateError> {
        let store = ObjectStore::connect(&at.bucket, &at.region, at.kms_key_id.clone())
            .map_err(|e| io("start the S3 client for", at.url_path(), e))?;
        Ok(Self::over(at, store))
    }

    /// With an SDK configuration of the caller's (tests, other tools).
    pub fn with_config(at: S3Location, config: &aws_types::SdkConfig) -> Result<Self, StateError> {
        let store = ObjectStore::with_config(&at.bucket, at.kms_key_id.clone(), config)
            .map_err(|e| io("start the S3 client for", at.url_path(), e))?;
        Ok(Self::over(at, store))
    }

    fn over(at: S3Location, store: ObjectStore) -> Self {
        S3Backend {
            at,
            store,
            etag: Mutex::new(None),
        }
    }

    fn get(&self, key: &str) -> Result<Option<Object>, String> {
        self.store.get(key)
    }

    fn put_if(
        &self,
        key: &str,
        body: Vec<u8>,
        if_match: Option<&str>,
        encrypt: bool,
    ) -> Result<Option<String>, String> {
        self.store.put_if(key, body, if_match, encrypt)
    }

    fn delete_if(
        &self,
        key: &str,
        etag: &str,
        still_ours: impl Fn(&[u8]) -> bool,
    ) -> Result<bool, String> {
        self.store.delete_if(key, etag, still_ours)
    }

    pub fn location(&self) -> &S3Location {
        &self.at
    }

    /// Removes the lock if it is still the one `id` took, whatever version
    /// of it is stored now (a renewal's answer may have been lost).
    fn release(&self, id: &str) -> Result<bool, String> {
        let Some(now) = self.get(&self.at.lock_key())? else {
            return Ok(false);
        };
        let ours = |body: &[u8]| serde_json::from_slice::<LockInfo>(body).is_ok_and(|l| l.id == id);
        if !ours(&now.body) {
            return Ok(false);
        }
        self.delete_if(&self.at.lock_key(), &now.etag, ours)
    }

    /// The state, or `None` when there is none yet.
    pub fn load_opt(&self, stack: &str) -> Result<Option<State>, StateError> {
        let found = self
            .get(&self.at.key)
            .map_err(|e| io("read state", self.at.url_path(), e))?;
        let Some(obj) = found else {
            *self.etag.lock().unwrap_or_else(|p| p.into_inner()) = Some(None);
            return Ok(None);
        };
        let text = String::from_utf8(obj.body).map_err(|_| StateError::Format {
            path: self.at.url_path(),
            version: None,
        })?;
        let state = State::from_json(&text, &self.at.url_path())?;
        if state.stack() != stack {
            return Err(StateError::WrongStack {
                path: self.at.url_path(),
                found: state.stack().to_string(),
                expected: stack.to_string(),
            });
        }
        *self.etag.lock().unwrap_or_else(|p| p.into_inner()) = Some(Some(obj.etag));
        Ok(Some(state))
    }

    /// Writes `state` with the next serial, only over the version this run
    /// read (or, for the first state, only where none exists): a version
    /// written by anyone else meanwhile is never overwritten.
    pub fn write(&self, state: &mut State) -> Result<(), StateError> {
        let known = self.etag.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let expected_etag = match known {
            Some(e) => e,
            // Never read: find out what is there (and refuse a mismatch).
            None => {
                let found = self
                    .get(&self.at.key)
                    .map_err(|e| io("read state", self.at.url_path(), e))?;
                match found {
                    None => None,
                    Some(obj) => {
                        let text = String::from_utf8_lossy(&obj.body).into_owned();
                        let there = State::from_json(&text, &self.at.url_path())?;
                        if there.serial() != state.serial() || there.lineage() != state.lineage() {
                            return Err(StateError::Conflict {
                                path: self.at.url_path(),
                                expected: state.serial(),
                                found: there.serial(),
                            });
                        }
                        Some(obj.etag)
                    }
                }
            }
        };
        let expected = state.serial();
        state.next_serial();
        let body = state.to_json().into_bytes();
        let written = self.put_if(&self.at.key, body.clone(), expected_etag.as_deref(), true);
        // A write that landed but whose answer was lost is sent again by the
        // SDK, and then fails its own precondition (or the retries run out):
        // what is stored is ours.
        let written = match written {
            Ok(Some(etag)) => Ok(Some(etag)),
            failed => match self.stored_body_is(&self.at.key, &body) {
                Some(etag) => Ok(Some(etag)),
                None => failed,
            },
        };
        match written {
            Ok(Some(etag)) => {
                *self.etag.lock().unwrap_or_else(|p| p.into_inner()) = Some(Some(etag));
                Ok(())
            }
            Ok(None) => {
                state.serial = expected;
                let found = self
                    .get(&self.at.key)
                    .ok()
                    .flatten()
                    .and_then(|o| {
                        State::from_json(&String::from_utf8_lossy(&o.body), &self.at.url_path())
                            .ok()
                    })
                    .map_or(0, |s| s.serial());
                Err(StateError::Conflict {
                    path: self.at.url_path(),
                    expected,
                    found,
                })
            }
            Err(e) => {
                state.serial = expected;
                Err(io("write state", self.at.url_path(), e))
            }
        }
    }

    /// The ETag of `key` if what is stored there is exactly `body` (read a
    /// few times: this runs after a call whose outcome is unknown).
    fn stored_body_is(&self, key: &str, body: &[u8]) -> Option<String> {
        for attempt in 0..3 {
            match self.get(key) {
                Ok(Some(now)) if now.body == body => return Some(now.etag),
                Ok(_) => return None,
                Err(_) => std::thread::sleep(Duration::from_millis(200 << attempt)),
            }
        }
        None
    }

    /// The lock as stored, with the time S3 last saw it renewed.
    fn read_lock(&self) -> Result<Option<(LockInfo, String)>, LockError> {
        let found = self.get(&self.at.lock_key()).map_err(|e| LockError::Io {
            action: "read",
            path: self.at.lock_url(),
            source: std::io::Error::other(e),
        })?;
        let Some(obj) = found else { return Ok(None) };
        let mut info: LockInfo =
            serde_json::from_slice(&obj.body).map_err(|e| LockError::Unreadable {
                path: self.at.lock_url(),
                reason: if obj.body.is_empty() {
                    "it is empty".to_string()
                } else {
                    format!("it is not a slipway lock: {e}")
                },
            })?;
        // Every renewal rewrites the object, so S3's clock says when it was
        // last renewed; the holder's own clock (written in it) is not
        // trusted, whichever way it is off.
        if let Some(m) = obj.modified
            && clock::parse_rfc3339_opt(&m).is_some()
        {
            info.renewed = m;
        }
        Ok(Some((info, obj.etag)))
    }

    /// Takes the lock for `command`, as a lease of `ttl` renewed in the
    /// background until the guard drops (which releases it).
    pub fn lock(&self, command: &str, ttl: Duration) -> Result<LockGuard, StateError> {
        let mut info = LockInfo::for_this_process(command);
        info.ttl_secs = ttl.as_secs().max(1);
        info.renewed = clock::now_rfc3339();
        let body = |info: &LockInfo| serde_json::to_vec_pretty(info).unwrap_or_default();
        let io_err = |e: String| LockError::Io {
            action: "write",
            path: self.at.lock_url(),
            source: std::io::Error::other(e),
        };
        let mut reclaimed = None;
        let mut cleared_unreadable = None;
        for _ in 0..4 {
            let created = match self.put_if(&self.at.lock_key(), body(&info), None, false) {
                Ok(created) => created,
                // Unknown outcome: it may have landed.
                Err(e) => match self.stored_body_is(&self.at.lock_key(), &body(&info)) {
                    Some(etag) => Some(etag),
                    None => return Err(io_err(e).into()),
                },
            };
            if let Some(etag) = created {
                return Ok(self.start(info, etag, reclaimed, cleared_unreadable)?);
            }
            let held = match self.read_lock() {
                Ok(Some(h)) => Some(h),
                Ok(None) => None,
                Err(LockError::Unreadable { reason, .. }) => {
                    // A damaged lock: taken over only once it is older
                    // than a lease, like the local backend's.
                    let obj = self
                        .get(&self.at.lock_key())
                        .map_err(|e| StateError::from(io_err(e)))?;
                    let Some(obj) = obj else { continue };
                    let old = obj
                        .modified
                        .as_deref()
                        .and_then(clock::parse_rfc3339_opt)
                        .is_some_and(|m| {
                            clock::now_unix() - m > i64::try_from(info.ttl_secs).unwrap_or(i64::MAX)
                        });
                    if !old {
                        return Err(LockError::Unreadable {
                            path: self.at.lock_url(),
                            reason,
                        }
                        .into());
                    }
                    if let Some(etag) = self
                        .put_if(&self.at.lock_key(), body(&info), Some(&obj.etag), false)
                        .map_err(io_err)?
                    {
                        cleared_unreadable = Some(reason);
                        return Ok(self.start(info, etag, reclaimed, cleared_unreadable)?);
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let Some((holder, etag)) = held else { continue };
            // Our own create, whose answer was lost and which the SDK sent
            // again.
            if holder.id == info.id {
                return Ok(self.start(info, etag, reclaimed, cleared_unreadable)?);
            }
            if !holder.is_stale() {
                return Err(LockError::Held {
                    holder: Box::new(holder),
                    path: self.at.lock_url(),
                }
                .into());
            }
            // Stale: replace exactly that version, or lose to whoever did.
            if let Some(new_etag) = self
                .put_if(&self.at.lock_key(), body(&info), Some(&etag), false)
                .map_err(io_err)?
            {
                reclaimed = Some(holder);
                return Ok(self.start(info, new_etag, reclaimed, cleared_unreadable)?);
            }
        }
        match self.read_lock()? {
            Some((holder, _)) => Err(LockError::Held {
                holder: Box::new(holder),
                path: self.at.lock_url(),
            }
            .into()),
            None => Err(LockError::Changed {
                path: self.at.lock_url(),
            }
            .into()),
        }
    }

    /// Starts the heartbeat: renews the lease every third of the TTL by
    /// rewriting the lock over the version it wrote last; the first time
    /// that precondition fails, the lock is no longer ours. Stopping it
    /// releases the lock (conditionally).
    fn start(
        &self,
        info: LockInfo,
        etag: String,
        reclaimed: Option<LockInfo>,
        cleared_unreadable: Option<String>,
    ) -> Result<LockGuard, LockError> {
        let lost = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let period = Duration::from_secs(info.ttl_secs) / 3;
        let me = S3Backend {
            at: self.at.clone(),
            store: self.store.clone(),
            etag: Mutex::new(None),
        };
        let ttl = Duration::from_secs(info.ttl_secs);
        let thread = std::thread::Builder::new()
            .name("state-lock-heartbeat".to_string())
            .spawn({
                let lost = Arc::clone(&lost);
                let mut info = info.clone();
                move || {
                    let mut etag = etag;
                    // Renewals are due a period after the last one that was
                    // confirmed, however long the calls take; a lease not
                    // confirmed for TTL minus one period may already be
                    // someone else's, so the run stops starting work.
                    let mut last_ok = std::time::Instant::now();
                    let mut wait = period;
                    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
                        info.renewed = clock::now_rfc3339();
                        let body = serde_json::to_vec_pretty(&info).unwrap_or_default();
                        match me.put_if(&me.at.lock_key(), body, Some(&etag), false) {
                            Ok(Some(new)) => {
                                etag = new;
                                last_ok = std::time::Instant::now();
                                wait = period;
                                continue;
                            }
                            // A failed precondition or an unknown outcome:
                            // whose is the lock now?
                            _ => match me.get(&me.at.lock_key()) {
                                Ok(Some(now))
                                    if serde_json::from_slice::<LockInfo>(&now.body)
                                        .is_ok_and(|l| l.id == info.id) =>
                                {
                                    // Still ours (an earlier answer was lost):
                                    // renew from the stored version at once.
                                    etag = now.etag;
                                    wait = Duration::from_millis(100);
                                }
                                // Someone else's lock, or none: no longer ours.
                                Ok(_) => {
                                    lost.store(true, Ordering::SeqCst);
                                    return;
                                }
                                Err(_) => wait = Duration::from_secs(1).min(period),
                            },
                        }
                        if last_ok.elapsed() + period >= ttl {
                            lost.store(true, Ordering::SeqCst);
                            let _ = me.release(&info.id);
                            return;
                        }
                    }
                    if !lost.load(Ordering::SeqCst) {
                        let _ = me.release(&info.id);
                    }
                }
            })
            .map_err(|source| LockError::Io {
                action: "start the heartbeat of",
                path: self.at.lock_url(),
                source,
            })?;
        Ok(LockGuard::held_elsewhere(
            info,
            reclaimed,
            cleared_unreadable,
            lost,
            stop,
            thread,
        ))
    }

    /// Who holds the lock, if anyone.
    pub fn lock_status(&self) -> Result<Option<LockInfo>, StateError> {
        Ok(self.read_lock()?.map(|(info, _)| info))
    }

    /// Removes the lock whose id is `id`: when it is stale, or with `force`
    /// even while its lease is live; with `force` and no id, an unreadable
    /// one. Only the version read is removed.
    pub fn unlock(&self, id: Option<&str>, force: bool) -> Result<Unlocked, StateError> {
        let gone = |removed: bool| {
            if removed {
                Ok(())
            } else {
                Err(StateError::from(LockError::Changed {
                    path: self.at.lock_url(),
                }))
            }
        };
        let del_err = |e: String| {
            StateError::from(LockError::Io {
                action: "remove",
                path: self.at.lock_url(),
                source: std::io::Error::other(e),
            })
        };
        match (self.read_lock(), id) {
            (Ok(None), _) => Err(LockError::NotLocked.into()),
            (Err(LockError::Unreadable { reason, .. }), None) if force => {
                let Some(obj) = self.get(&self.at.lock_key()).map_err(del_err)? else {
                    return Err(LockError::NotLocked.into());
                };
                let body = obj.body.clone();
                gone(
                    self.delete_if(&self.at.lock_key(), &obj.etag, |b| b == body.as_slice())
                        .map_err(del_err)?,
                )?;
                Ok(Unlocked::Unreadable { reason })
            }
            (Err(e), _) => Err(e.into()),
            (Ok(Some((holder, _))), None) => Err(LockError::IdRequired {
                holder: Box::new(holder),
            }
            .into()),
            (Ok(Some((holder, _))), Some(id)) if holder.id != id => Err(LockError::WrongId {
                given: id.to_string(),
                holder: Box::new(holder),
            }
            .into()),
            (Ok(Some((holder, etag))), Some(_)) if force || holder.is_stale() => {
                let id = holder.id.clone();
                gone(
                    self.delete_if(&self.at.lock_key(), &etag, |b| {
                        serde_json::from_slice::<LockInfo>(b).is_ok_and(|l| l.id == id)
                    })
                    .map_err(del_err)?,
                )?;
                Ok(Unlocked::Holder(Box::new(holder)))
            }
            (Ok(Some((holder, _))), Some(_)) => Err(LockError::Live {
                holder: Box::new(holder),
            }
            .into()),
        }
    }
    /// Writes `state` exactly as it is (serial and lineage kept), for
    /// `state migrate`: where no state exists, or over the version read.
    pub fn put_exact(&self, state: &State) -> Result<(), StateError> {
        let known = self.etag.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(etag) = known else {
            return Err(io(
                "write state (read it first)",
                self.at.url_path(),
                "no version was read",
            ));
        };
        let body = state.to_json().into_bytes();
        let written = match self.put_if(&self.at.key, body.clone(), etag.as_deref(), true) {
            Ok(Some(new)) => Ok(Some(new)),
            failed => self
                .stored_body_is(&self.at.key, &body)
                .map_or(failed, |e| Ok(Some(e))),
        };
        match written {
            Ok(Some(new)) => {
                *self.etag.lock().unwrap_or_else(|p| p.into_inner()) = Some(Some(new));
                Ok(())
            }
            Ok(None) => Err(StateError::Conflict {
                path: self.at.url_path(),
                expected: state.serial(),
                found: 0,
            }),
            Err(e) => Err(io("write state", self.at.url_path(), e)),
        }
    }

    /// `slipway state init-backend`: the bucket, made or brought up to
    /// what a state bucket needs, idempotently. Returns what it did.
    pub fn init_backend(&self) -> Result<Vec<String>, StateError> {
        self.store
            .init_bucket(&BucketSpec {
                name: self.at.bucket.clone(),
                region: self.at.region.clone(),
                kms_key_id: self.at.kms_key_id.clone(),
                lock_key: self.at.lock_key(),
            })
            .map_err(|e| io("set up the state bucket for", self.at.url_path(), e))
    }
}
