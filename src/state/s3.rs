//! State in S3, for teams, CI and cron sharing one stack: the state object
//! is written only conditionally on the version this run read (`If-Match`
//! on its ETag; `If-None-Match: *` for the first), and the lock is a second
//! object created with `If-None-Match: *`, holding its holder and a lease
//! the holder renews by conditional overwrites. A lock whose lease expired
//! is stale; taking it over, renewing it and releasing it are all
//! conditional on the ETag read, so a run can only ever remove or replace
//! the lock it looked at.
//!
//! The rest of slipway calls state backends synchronously (the local one
//! writes files); this one runs its calls on a small runtime of its own, on
//! a thread of their own, so it can be called from anywhere.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;

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

/// The backend's own runtime. Dropped without blocking: the last owner may
/// be a task of the caller's runtime, where a blocking drop would panic.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for OwnRuntime {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &Self::Target {
        match &self.0 {
            Some(rt) => rt,
            None => unreachable!("the runtime is only taken on drop"),
        }
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The S3 backend.
pub struct S3Backend {
    at: S3Location,
    client: aws_sdk_s3::Client,
    runtime: Arc<OwnRuntime>,
    /// The ETag of the state object as this run last read or wrote it;
    /// `Some(None)` once it is known not to exist.
    etag: Mutex<Option<Option<String>>>,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend").field("at", &self.at).finish()
    }
}

/// Runs `fut` to completion on `rt`, from a thread that is not inside any
/// runtime (callers may be).
fn run<T: Send>(rt: &tokio::runtime::Runtime, fut: impl Future<Output = T> + Send) -> T {
    std::thread::scope(|s| {
        match s.spawn(|| rt.block_on(fut)).join() {
            Ok(v) => v,
            // The closure only awaits SDK calls, which do not panic; if one
            // did, carry it on.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

fn io(action: &'static str, at: PathBuf, detail: impl std::fmt::Display) -> StateError {
    StateError::Io {
        action,
        path: at,
        source: std::io::Error::other(detail.to_string()),
    }
}

/// An SDK error, with its code and message (`AccessDenied: …`).
fn describe<E>(e: &aws_sdk_s3::error::SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    match (e.as_service_error(), status) {
        (Some(se), _) if se.code().is_some() => format!(
            "{}: {}",
            se.code().unwrap_or_default(),
            se.message().unwrap_or("(no message)")
        ),
        // An answer without an error document (S3 sends none to HEAD, and
        // none for some denials).
        (_, Some(403)) => "HTTP 403 Forbidden: access denied (the bucket's policy, this identity's S3 permissions, or the KMS key's)".to_string(),
        (_, Some(s)) => format!("HTTP {s} without an error message"),
        (_, None) => aws_smithy_types::error::display::DisplayErrorContext(e).to_string(),
    }
}

fn code<E: ProvideErrorMetadata>(e: &aws_sdk_s3::error::SdkError<E>) -> Option<&str> {
    e.as_service_error().and_then(|se| se.code())
}

/// A failed precondition (`If-Match`, `If-None-Match`): 412, or 409 for a
/// conditional write racing another on the same key.
fn precondition_failed<E: ProvideErrorMetadata>(e: &aws_sdk_s3::error::SdkError<E>) -> bool {
    matches!(
        code(e),
        Some("PreconditionFailed" | "ConditionalRequestConflict")
    ) || e
        .raw_response()
        .is_some_and(|r| matches!(r.status().as_u16(), 412 | 409))
}

fn not_found<E: ProvideErrorMetadata>(e: &aws_sdk_s3::error::SdkError<E>) -> bool {
    matches!(code(e), Some("NoSuchKey" | "NotFound"))
        || e.raw_response().is_some_and(|r| r.status().as_u16() == 404)
}

/// An object's body and ETag.
struct Object {
    body: Vec<u8>,
    etag: String,
    /// S3's clock, when it was last written.
    modified: Option<String>,
}

impl S3Backend {
    /// Connects with the standard credential chain (and `AWS_ENDPOINT_URL`,
    /// as every other client); nothing is called until it is used.
    pub fn new(at: S3Location) -> Result<Self, StateError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("state-s3")
            .enable_all()
            .build()
            .map_err(|e| io("start the S3 client for", at.url_path(), e))?;
        let region = at.region.clone();
        let config = run(&runtime, async move {
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(region))
                .load()
                .await
        });
        let mut s3 = aws_sdk_s3::config::Builder::from(&config);
        // A local or S3-compatible endpoint takes bucket names in the path.
        if config.endpoint_url().is_some() {
            s3 = s3.force_path_style(true);
        }
        Ok(S3Backend {
            at,
            client: aws_sdk_s3::Client::from_conf(s3.build()),
            runtime: Arc::new(OwnRuntime(Some(runtime))),
            etag: Mutex::new(None),
        })
    }

    pub fn location(&self) -> &S3Location {
        &self.at
    }

    fn get(&self, key: &str) -> Result<Option<Object>, String> {
        let client = self.client.clone();
        let bucket = self.at.bucket.clone();
        let key = key.to_string();
        run(&self.runtime, async move {
            match client.get_object().bucket(&bucket).key(&key).send().await {
                Ok(out) => {
                    let etag = out.e_tag().unwrap_or_default().to_string();
                    let modified = out
                        .last_modified()
                        .and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok());
                    let body = out
                        .body
                        .collect()
                        .await
                        .map_err(|e| format!("reading its body failed: {e}"))?
                        .into_bytes()
                        .to_vec();
                    Ok(Some(Object {
                        body,
                        etag,
                        modified,
                    }))
                }
                Err(e) if not_found(&e) => Ok(None),
                Err(e) => Err(describe(&e)),
            }
        })
    }

    /// Puts `body` at `key` if the object's ETag is `if_match`, or if it
    /// does not exist (`None`). `Ok(None)` when the precondition failed.
    fn put_if(
        &self,
        key: &str,
        body: Vec<u8>,
        if_match: Option<&str>,
        encrypt: bool,
    ) -> Result<Option<String>, String> {
        let client = self.client.clone();
        let bucket = self.at.bucket.clone();
        let key = key.to_string();
        let if_match = if_match.map(str::to_string);
        let kms = self.at.kms_key_id.clone().filter(|_| encrypt);
        run(&self.runtime, async move {
            let mut put = client
                .put_object()
                .bucket(&bucket)
                .key(&key)
                .content_type("application/json")
                .body(ByteStream::from(body));
            put = match &if_match {
                Some(etag) => put.if_match(etag),
                None => put.if_none_match("*"),
            };
            if let Some(k) = &kms {
                put = put
                    .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                    .ssekms_key_id(k);
            }
            match put.send().await {
                Ok(out) => Ok(Some(out.e_tag().unwrap_or_default().to_string())),
                Err(e) if precondition_failed(&e) => Ok(None),
                // `If-Match` on an object that is gone.
                Err(e) if if_match.is_some() && not_found(&e) => Ok(None),
                Err(e) => Err(describe(&e)),
            }
        })
    }

    /// Deletes `key` if its ETag is `etag`. Where the server does not take
    /// a conditional delete, the object is read again and deleted only if
    /// it is still that version (`still_ours` decides from its body).
    fn delete_if(
        &self,
        key: &str,
        etag: &str,
        still_ours: impl Fn(&[u8]) -> bool,
    ) -> Result<bool, String> {
        let client = self.client.clone();
        let bucket = self.at.bucket.clone();
        let owned_key = key.to_string();
        let owned_etag = etag.to_string();
        let conditional = run(&self.runtime, async move {
            client
                .delete_object()
                .bucket(&bucket)
                .key(&owned_key)
                .if_match(&owned_etag)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    if precondition_failed(&e) || not_found(&e) {
                        Err(false)
                    } else if matches!(
                        code(&e),
                        Some("NotImplemented" | "InvalidArgument" | "InvalidRequest")
                    ) {
                        // No conditional deletes here: fall back.
                        Err(true)
                    } else {
                        Ok(describe(&e))
                    }
                })
        });
        match conditional {
            Ok(()) => Ok(true),
            Err(Err(false)) => Ok(false),
            Err(Ok(detail)) => Err(detail),
            Err(Err(true)) => {
                let Some(now) = self.get(key)? else {
                    return Ok(false);
                };
                if now.etag != etag || !still_ours(&now.body) {
                    return Ok(false);
                }
                let client = self.client.clone();
                let bucket = self.at.bucket.clone();
                let key = key.to_string();
                run(&self.runtime, async move {
                    client
                        .delete_object()
                        .bucket(&bucket)
                        .key(&key)
                        .send()
                        .await
                        .map(|_| true)
                        .map_err(|e| describe(&e))
                })
            }
        }
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
        // SDK, and then fails its own precondition: what is stored is ours.
        let written = match written {
            Ok(None) => match self.get(&self.at.key) {
                Ok(Some(now)) if now.body == body => Ok(Some(now.etag)),
                _ => Ok(None),
            },
            other => other,
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
        // S3's clock says when it was last written: a holder whose clock
        // runs behind does not look stale for it.
        if let Some(m) = obj.modified
            && clock::parse_rfc3339_opt(&m)
                .is_some_and(|m| clock::parse_rfc3339_opt(&info.renewed).is_none_or(|r| m > r))
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
            if let Some(etag) = self
                .put_if(&self.at.lock_key(), body(&info), None, false)
                .map_err(io_err)?
            {
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
            client: self.client.clone(),
            runtime: Arc::clone(&self.runtime),
            etag: Mutex::new(None),
        };
        let thread = std::thread::Builder::new()
            .name("state-lock-heartbeat".to_string())
            .spawn({
                let lost = Arc::clone(&lost);
                let mut info = info.clone();
                move || {
                    let mut etag = etag;
                    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                        info.renewed = clock::now_rfc3339();
                        let body = serde_json::to_vec_pretty(&info).unwrap_or_default();
                        match me.put_if(&me.at.lock_key(), body.clone(), Some(&etag), false) {
                            Ok(Some(new)) => etag = new,
                            Ok(None) => match me.get(&me.at.lock_key()) {
                                // The renewal landed; only its answer was lost.
                                Ok(Some(now)) if now.body == body => etag = now.etag,
                                // Someone else's lock, or none: no longer ours.
                                Ok(_) => {
                                    lost.store(true, Ordering::SeqCst);
                                    return;
                                }
                                // Cannot tell now; the next period asks again.
                                Err(_) => {}
                            },
                            // Tried again next period; the TTL leaves room for two.
                            Err(_) => {}
                        }
                    }
                    if !lost.load(Ordering::SeqCst) {
                        let id = info.id.clone();
                        let _ = me.delete_if(&me.at.lock_key(), &etag, |body| {
                            serde_json::from_slice::<LockInfo>(body).is_ok_and(|l| l.id == id)
                        });
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
                Ok(Unlocked::Holder(holder))
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
        match self.put_if(
            &self.at.key,
            state.to_json().into_bytes(),
            etag.as_deref(),
            true,
        ) {
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
        let client = self.client.clone();
        let at = self.at.clone();
        let url = at.url_path();
        run(&self.runtime, async move { init(&client, &at).await })
            .map_err(|e| io("set up the state bucket for", url, e))
    }
}

/// The statement that refuses every request not made over TLS.
const TLS_ONLY_SID: &str = "SlipwayDenyInsecureTransport";

async fn init(client: &aws_sdk_s3::Client, at: &S3Location) -> Result<Vec<String>, String> {
    use aws_sdk_s3::types::{
        BucketLifecycleConfiguration, BucketLocationConstraint, BucketVersioningStatus,
        CreateBucketConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
        LifecycleRuleFilter, NoncurrentVersionExpiration, PublicAccessBlockConfiguration,
        ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
        ServerSideEncryptionRule, VersioningConfiguration,
    };
    let b = at.bucket.as_str();
    let mut done = Vec::new();

    let mut create = client.create_bucket().bucket(b);
    if at.region != "us-east-1" {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(at.region.as_str()))
                .build(),
        );
    }
    match create.send().await {
        Ok(_) => done.push(format!("created bucket `{b}` in {}", at.region)),
        Err(e) if code(&e) == Some("BucketAlreadyOwnedByYou") => {
            done.push(format!("bucket `{b}` exists (yours)"));
        }
        Err(e) if code(&e) == Some("BucketAlreadyExists") => {
            return Err(format!(
                "bucket name `{b}` is taken by another AWS account; choose another `[state] bucket`"
            ));
        }
        Err(e) => return Err(format!("CreateBucket: {}", describe(&e))),
    }

    client
        .put_bucket_versioning()
        .bucket(b)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .map_err(|e| format!("PutBucketVersioning: {}", describe(&e)))?;
    done.push("versioning on: every state version is kept".to_string());

    let mut default = ServerSideEncryptionByDefault::builder();
    default = match &at.kms_key_id {
        Some(k) => default
            .sse_algorithm(ServerSideEncryption::AwsKms)
            .kms_master_key_id(k),
        None => default.sse_algorithm(ServerSideEncryption::Aes256),
    };
    let rule = ServerSideEncryptionRule::builder()
        .apply_server_side_encryption_by_default(
            default
                .build()
                .map_err(|e| format!("encryption settings: {e}"))?,
        )
        .bucket_key_enabled(at.kms_key_id.is_some())
        .build();
    client
        .put_bucket_encryption()
        .bucket(b)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(rule)
                .build()
                .map_err(|e| format!("encryption settings: {e}"))?,
        )
        .send()
        .await
        .map_err(|e| format!("PutBucketEncryption: {}", describe(&e)))?;
    done.push(match &at.kms_key_id {
        Some(k) => format!("default encryption: SSE-KMS with `{k}`"),
        None => "default encryption: SSE-S3 (AES-256)".to_string(),
    });

    client
        .put_public_access_block()
        .bucket(b)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| format!("PutPublicAccessBlock: {}", describe(&e)))?;
    done.push("public access blocked".to_string());

    // TLS only, added to whatever policy the bucket has.
    let mut policy = match client.get_bucket_policy().bucket(b).send().await {
        Ok(out) => serde_json::from_str::<serde_json::Value>(out.policy().unwrap_or("{}"))
            .map_err(|e| format!("the bucket's policy is not JSON: {e}"))?,
        Err(e) if code(&e) == Some("NoSuchBucketPolicy") => serde_json::json!({}),
        Err(e) => return Err(format!("GetBucketPolicy: {}", describe(&e))),
    };
    let partition = crate::stack::partition_of(&at.region);
    let statement = serde_json::json!({
        "Sid": TLS_ONLY_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [format!("arn:{partition}:s3:::{b}"), format!("arn:{partition}:s3:::{b}/*")],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    });
    let statements = policy
        .as_object_mut()
        .ok_or("the bucket's policy is not a JSON object")?
        .entry("Statement")
        .or_insert_with(|| serde_json::json!([]));
    if !statements.is_array() {
        *statements = serde_json::json!([statements.clone()]);
    }
    let list = statements
        .as_array_mut()
        .ok_or("the bucket policy's Statement is not a list")?;
    list.retain(|st| st.get("Sid").and_then(|s| s.as_str()) != Some(TLS_ONLY_SID));
    list.push(statement);
    policy["Version"] = serde_json::json!("2012-10-17");
    client
        .put_bucket_policy()
        .bucket(b)
        .policy(policy.to_string())
        .send()
        .await
        .map_err(|e| format!("PutBucketPolicy: {}", describe(&e)))?;
    done.push(format!(
        "bucket policy: requests without TLS are denied (`{TLS_ONLY_SID}`)"
    ));

    // The lock object is rewritten every few seconds; with versioning on,
    // its old versions would pile up. Other rules are kept.
    let lock_key = at.lock_key();
    let id: String = format!("slipway-lock-versions:{lock_key}")
        .chars()
        .take(255)
        .collect();
    let mut rules: Vec<LifecycleRule> = match client
        .get_bucket_lifecycle_configuration()
        .bucket(b)
        .send()
        .await
    {
        Ok(out) => out.rules().to_vec(),
        Err(e) if code(&e) == Some("NoSuchLifecycleConfiguration") => Vec::new(),
        Err(e) => return Err(format!("GetBucketLifecycleConfiguration: {}", describe(&e))),
    };
    rules.retain(|r| r.id() != Some(id.as_str()));
    rules.push(
        LifecycleRule::builder()
            .id(&id)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix(&lock_key).build())
            .noncurrent_version_expiration(
                NoncurrentVersionExpiration::builder()
                    .noncurrent_days(1)
                    .build(),
            )
            .expiration(
                LifecycleExpiration::builder()
                    .expired_object_delete_marker(true)
                    .build(),
            )
            .build()
            .map_err(|e| format!("lifecycle rule: {e}"))?,
    );
    client
        .put_bucket_lifecycle_configuration()
        .bucket(b)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .set_rules(Some(rules))
                .build()
                .map_err(|e| format!("lifecycle configuration: {e}"))?,
        )
        .send()
        .await
        .map_err(|e| format!("PutBucketLifecycleConfiguration: {}", describe(&e)))?;
    done.push(format!(
        "lifecycle rule `{id}`: old versions of the lock object expire after a day"
    ));
    Ok(done)
}
