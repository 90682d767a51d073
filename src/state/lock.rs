//! The run lock: one mutating run per stack at a time. The lock names its
//! holder so the loser can say who has it, and it is a lease: the holder
//! renews it every third of its TTL, and a lock not renewed for a TTL is
//! stale, wherever its holder ran.
//!
//! A lock file is never visible half-written: it is written whole to a temp
//! file and hard-linked into place (which fails while a lock exists), and a
//! renewal only touches the modification time of that same file (checked by
//! device, inode and contents), so it can never renew or overwrite a lock
//! another run took. Removing a lock goes through
//! a rename to a private name first, and only a file that is still the one
//! judged removable is deleted, so breaking a stale lock cannot delete a lock
//! another run has just taken.

use std::fs::{self, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock;

/// How long a lock lives after its holder's last heartbeat.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// The lease new locks get: `SLIPWAY_LOCK_TTL_SECS` (at least 3), else
/// [`DEFAULT_TTL`].
pub fn ttl() -> Duration {
    std::env::var("SLIPWAY_LOCK_TTL_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(DEFAULT_TTL, |s| Duration::from_secs(s.max(3)))
}

fn default_ttl_secs() -> u64 {
    DEFAULT_TTL.as_secs()
}

/// Seconds as a signed count, to subtract times.
fn secs(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Who holds a lock, written into the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub id: String,
    pub user: String,
    pub host: String,
    pub pid: u32,
    /// RFC 3339 time the lock was taken.
    pub created: String,
    pub command: String,
    /// RFC 3339 time of the holder's last heartbeat. Empty in locks written
    /// before heartbeats existed; those count from `created`.
    #[serde(default)]
    pub renewed: String,
    /// Seconds the lock lives after its last heartbeat.
    #[serde(default = "default_ttl_secs")]
    pub ttl_secs: u64,
    /// The holder's PID namespace (`pid:[4026531836]`), empty if unknown. Its
    /// pid means something to us only when this is also ours.
    #[serde(default)]
    pub pid_namespace: String,
    /// The holder's kernel boot id (`/proc/sys/kernel/random/boot_id`),
    /// empty if unknown: host names and the root PID namespace's id repeat
    /// across machines, a boot id does not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub boot_id: String,
    /// The CI build the holder runs in (Jenkins' `BUILD_URL`, else its
    /// `JOB_NAME`), empty outside CI.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ci: String,
}

impl LockInfo {
    /// Takes the lock file's modification time as the last heartbeat when
    /// it is later than the time written in it (the heartbeat touches the
    /// file rather than rewriting it). Locks from before heartbeats keep
    /// counting from `created`.
    fn note_renewal(&mut self, modified: std::time::SystemTime) {
        if self.renewed.is_empty() {
            return;
        }
        let touched = time::OffsetDateTime::from(modified);
        let written = clock::parse_rfc3339_opt(&self.renewed);
        if written.is_none_or(|w| touched.unix_timestamp() >= w)
            && let Ok(text) = touched.format(&time::format_description::well_known::Rfc3339)
        {
            self.renewed = text;
        }
    }

    /// Describes this process running `command`.
    pub fn for_this_process(command: &str) -> Self {
        let now = clock::now_rfc3339();
        LockInfo {
            id: uuid::Uuid::new_v4().to_string(),
            user: current_user(),
            host: hostname(),
            pid: std::process::id(),
            created: now.clone(),
            command: command.to_string(),
            renewed: now,
            ttl_secs: default_ttl_secs(),
            pid_namespace: pid_namespace(),
            boot_id: boot_id(),
            ci: std::env::var("BUILD_URL")
                .or_else(|_| std::env::var("JOB_NAME"))
                .unwrap_or_default(),
        }
    }

    /// True when another run may take the lock over: see [`Staleness`].
    pub fn is_stale(&self) -> bool {
        self.staleness().is_stale()
    }

    /// How the lock looks from this process, now.
    pub fn staleness(&self) -> Staleness {
        self.staleness_at(clock::now_unix())
    }

    fn staleness_at(&self, now: i64) -> Staleness {
        let stamp = if self.renewed.is_empty() {
            &self.created
        } else {
            &self.renewed
        };
        let renewed_ago = clock::parse_rfc3339_opt(stamp).map(|t| now - t);
        let ttl = secs(self.ttl_secs);
        let reason = if self.holder_gone() {
            Some(StaleReason::HolderGone)
        } else if renewed_ago.is_none_or(|ago| ago > ttl) {
            Some(StaleReason::Expired)
        } else {
            None
        };
        Staleness {
            renewed_ago,
            ttl_secs: self.ttl_secs,
            reason,
        }
    }

    /// The holder's pid is ours to check only on this host and in our PID
    /// namespace: containers sharing a host name each number their own processes.
    fn holder_gone(&self) -> bool {
        // Same machine: the boot id when the lock has one, else the host name.
        let same_machine = if self.boot_id.is_empty() {
            self.host == hostname()
        } else {
            self.boot_id == boot_id()
        };
        same_machine
            && self.host == hostname()
            && !self.pid_namespace.is_empty()
            && self.pid_namespace == pid_namespace()
            && !process_alive(self.pid)
    }
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` by {}@{} (pid {}) since {}",
            self.command, self.user, self.host, self.pid, self.created
        )?;
        if let Some(t) = clock::parse_rfc3339_opt(&self.created) {
            write!(
                f,
                " (held for {})",
                clock::human_duration((clock::now_unix() - t).max(0))
            )?;
        }
        if !self.ci.is_empty() {
            write!(f, " in {}", self.ci)?;
        }
        write!(f, ", lock id `{}`", self.id)
    }
}

/// How a lock looks to another run: when it was last renewed and whether it
/// is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staleness {
    /// Seconds since the last heartbeat; `None` when the lock's time does not
    /// parse (such a lock is stale).
    pub renewed_ago: Option<i64>,
    pub ttl_secs: u64,
    /// Why the lock is stale; `None` while it is live.
    pub reason: Option<StaleReason>,
}

/// Why a lock is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StaleReason {
    /// Not renewed within its TTL.
    Expired,
    /// Its holder ran on this host, in our PID namespace, and is gone.
    HolderGone,
}

impl Staleness {
    pub fn is_stale(&self) -> bool {
        self.reason.is_some()
    }

    /// Whole seconds until the lease expires, if it is live.
    pub fn expires_in(&self) -> Option<i64> {
        let ttl = secs(self.ttl_secs);
        match (self.reason, self.renewed_ago) {
            (None, Some(ago)) => Some(ttl.saturating_sub(ago.max(0))),
            _ => None,
        }
    }
}

/// `renewed 3s ago`, then why it is stale if it is.
impl std::fmt::Display for Staleness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.renewed_ago {
            Some(ago) => write!(f, "renewed {} ago", clock::human_duration(ago))?,
            None => f.write_str("renewal time unreadable")?,
        }
        match self.reason {
            None => Ok(()),
            Some(StaleReason::Expired) => write!(
                f,
                ", stale: not renewed within its {} lease",
                clock::human_duration(secs(self.ttl_secs))
            ),
            Some(StaleReason::HolderGone) => f.write_str(", stale: its process is gone"),
        }
    }
}

/// Why a lock could not be taken or released.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the state is locked: {holder}; {}", holder.staleness())]
    Held {
        holder: Box<LockInfo>,
        path: PathBuf,
    },
    #[error("lock id `{given}` does not match the lock held ({holder})")]
    WrongId {
        given: String,
        holder: Box<LockInfo>,
    },
    #[error("the lock is live: {holder}; {}", holder.staleness())]
    Live { holder: Box<LockInfo> },
    #[error("the state is locked by {holder}; give its lock id to remove it")]
    IdRequired { holder: Box<LockInfo> },
    #[error("the state is not locked")]
    NotLocked,
    #[error(
        "lock file `{}` is unreadable ({reason}): a run died while writing it, or it was damaged",
        path.display()
    )]
    Unreadable { path: PathBuf, reason: String },
    #[error("lock file `{}` changed on every attempt; another run is taking or removing it", path.display())]
    Changed { path: PathBuf },
    #[error("cannot {action} lock file `{}`", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LockError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            LockError::Held { holder, .. } if holder.is_stale() => Some(format!(
                "if no run is active, run `slipway state unlock {}`",
                holder.id
            )),
            LockError::Held { holder, .. } => Some(format!(
                "wait for that run to finish; if it died, the lock expires {} after its last renewal, or remove it now with `slipway state unlock {} --force`",
                clock::human_duration(secs(holder.ttl_secs)),
                holder.id
            )),
            LockError::Live { holder } => Some(format!(
                "if that run is gone, wait for the lease to expire ({} left) or run `slipway state unlock {} --force`",
                clock::human_duration(holder.staleness().expires_in().unwrap_or(0)),
                holder.id
            )),
            LockError::IdRequired { holder } if holder.is_stale() => {
                Some(format!("run `slipway state unlock {}`", holder.id))
            }
            LockError::IdRequired { holder } => Some(format!(
                "the lock is live; if that run is gone, run `slipway state unlock {} --force`",
                holder.id
            )),
            LockError::Unreadable { .. } => Some(
                "if no run is writing it, `slipway state unlock --force` (without a lock id) clears it"
                    .to_string(),
            ),
            LockError::Changed { .. } => {
                Some("run `slipway state lock` to see who holds it now".to_string())
            }
            LockError::WrongId { .. } | LockError::NotLocked | LockError::Io { .. } => None,
        }
    }
}

/// A held lock, renewed in the background and released on drop.
#[derive(Debug)]
pub struct LockGuard {
    /// The local lock file this guard removes on drop; `None` when the
    /// heartbeat releases the lock itself (the S3 backend).
    path: Option<PathBuf>,
    info: LockInfo,
    /// A stale lock this run took over, reported to the user.
    reclaimed: Option<LockInfo>,
    /// Why an unreadable lock file older than the TTL, cleared by this run, was unreadable.
    cleared_unreadable: Option<String>,
    lost: Arc<AtomicBool>,
    /// Dropping it stops the heartbeat at once.
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<JoinHandle<()>>,
}

impl LockGuard {
    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    pub fn reclaimed(&self) -> Option<&LockInfo> {
        self.reclaimed.as_ref()
    }

    /// Why the unreadable lock file this run cleared away (it was older than
    /// the TTL) was unreadable.
    pub fn cleared_unreadable(&self) -> Option<&str> {
        self.cleared_unreadable.as_deref()
    }

    /// True once the heartbeat found the lock file no longer ours (it was
    /// force-unlocked, or broken as stale by another run): from then on this
    /// run no longer keeps others out.
    /// A flag the heartbeat sets when the lock is no longer ours, for a
    /// run to watch while it works.
    pub fn lost_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.lost)
    }

    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // The heartbeat stops first: a renewal racing the removal would put
        // the file back.
        drop(self.stop.take());
        if let Some(thread) = self.heartbeat.take() {
            let _ = thread.join();
        }
        // Only remove the file if it is still ours (someone may have force-unlocked).
        if let Some(path) = &self.path
            && !self.lost()
            && matches!(inspect(path), Ok(Found::Held(held)) if held.id == self.info.id)
        {
            let _ = remove_if(path, Judged::Id(&self.info.id));
        }
    }
}

/// Takes the lock at `path` for `info`, as a lease of `ttl` (whole seconds,
/// at least one) that a background thread renews until the guard drops. A
/// stale lock is taken over (and reported through [`LockGuard::reclaimed`]);
/// so is an unreadable lock file not modified for `ttl`.
pub fn acquire(path: &Path, mut info: LockInfo, ttl: Duration) -> Result<LockGuard, LockError> {
    info.ttl_secs = ttl.as_secs().max(1);
    info.renewed = clock::now_rfc3339();
    let ttl = Duration::from_secs(info.ttl_secs);
    let mut reclaimed = None;
    let mut cleared_unreadable = None;
    for _ in 0..4 {
        if place(path, &info)? {
            return LockGuard::start(path, info, reclaimed, cleared_unreadable);
        }
        match inspect(path)? {
            // Released meanwhile.
            Found::Absent => {}
            Found::Held(holder) if holder.is_stale() => {
                if remove_if(path, Judged::Stale(&holder))? == Removal::Removed {
                    reclaimed = Some(holder);
                }
            }
            Found::Held(holder) => {
                return Err(LockError::Held {
                    holder: Box::new(holder),
                    path: path.to_path_buf(),
                });
            }
            Found::Unreadable { reason, stamp, age } if age > ttl => {
                if remove_if(path, Judged::Unreadable(stamp))? == Removal::Removed {
                    cleared_unreadable = Some(reason);
                }
            }
            Found::Unreadable { reason, .. } => {
                return Err(LockError::Unreadable {
                    path: path.to_path_buf(),
                    reason,
                });
            }
        }
    }
    // Lost every race: report whoever holds it now.
    match inspect(path)? {
        Found::Held(holder) => Err(LockError::Held {
            holder: Box::new(holder),
            path: path.to_path_buf(),
        }),
        Found::Unreadable { reason, .. } => Err(LockError::Unreadable {
            path: path.to_path_buf(),
            reason,
        }),
        Found::Absent => Err(LockError::Changed {
            path: path.to_path_buf(),
        }),
    }
}

impl LockGuard {
    /// A lock held in another store, whose heartbeat thread renews it and
    /// releases it once `stop` is dropped.
    pub(crate) fn held_elsewhere(
        info: LockInfo,
        reclaimed: Option<LockInfo>,
        cleared_unreadable: Option<String>,
        lost: Arc<AtomicBool>,
        stop: mpsc::Sender<()>,
        heartbeat: JoinHandle<()>,
    ) -> Self {
        LockGuard {
            path: None,
            info,
            reclaimed,
            cleared_unreadable,
            lost,
            stop: Some(stop),
            heartbeat: Some(heartbeat),
        }
    }

    fn start(
        path: &Path,
        info: LockInfo,
        reclaimed: Option<LockInfo>,
        cleared_unreadable: Option<String>,
    ) -> Result<Self, LockError> {
        let lost = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel();
        let period = Duration::from_secs(info.ttl_secs) / 3;
        // The heartbeat touches only this file (the inode just linked into
        // place), never whatever the path names later.
        let ours = fs::metadata(path)
            .map(|m| (m.dev(), m.ino()))
            .map_err(|source| io_error("read", path, source))?;
        let spawned = std::thread::Builder::new()
            .name("state-lock-heartbeat".to_string())
            .spawn({
                let path = path.to_path_buf();
                let lost = Arc::clone(&lost);
                let id = info.id.clone();
                move || heartbeat(&path, ours, &id, period, &stopped, &lost)
            });
        let thread = match spawned {
            Ok(thread) => thread,
            Err(source) => {
                let _ = remove_if(path, Judged::Id(&info.id));
                return Err(LockError::Io {
                    action: "start the heartbeat of",
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Ok(LockGuard {
            path: Some(path.to_path_buf()),
            info,
            reclaimed,
            cleared_unreadable,
            lost,
            stop: Some(stop),
            heartbeat: Some(thread),
        })
    }
}

/// Renews the lock every `period` until `stop` says so or disconnects; sets
/// `lost` and stops when the lock is no longer ours.
fn heartbeat(
    path: &Path,
    ours: (u64, u64),
    id: &str,
    period: Duration,
    stop: &mpsc::Receiver<()>,
    lost: &AtomicBool,
) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(period) {
        match renew(path, ours, id) {
            Ok(true) => {}
            Ok(false) => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
            // A failed write is tried again next period; the TTL leaves room for two.
            Err(_) => {}
        }
    }
}

/// Renews the lock by touching its modification time — through a handle
/// on the file the path names now, and only when that is the file this run
/// linked into place (`ours`: device and inode). A lock another run took
/// meanwhile is a different file, so a late heartbeat can never overwrite
/// or renew it. `Ok(false)` when the lock is no longer ours.
fn renew(path: &Path, ours: (u64, u64), id: &str) -> Result<bool, LockError> {
    let open = || fs::File::options().read(true).write(true).open(path);
    let mut opened = open();
    // A run breaking a stale lock moves the file aside for a moment and puts
    // back one that turns out not to be stale.
    for _ in 0..4 {
        match &opened {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::thread::sleep(Duration::from_millis(50));
                opened = open();
            }
            _ => break,
        }
    }
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(io_error("renew", path, source)),
    };
    let meta = file
        .metadata()
        .map_err(|source| io_error("renew", path, source))?;
    if (meta.dev(), meta.ino()) != ours {
        return Ok(false);
    }
    // An inode number is reused once freed: the contents, read through the
    // same handle, say whose file it is.
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| io_error("renew", path, source))?;
    if serde_json::from_slice::<LockInfo>(&bytes)
        .map(|held| held.id != id)
        .unwrap_or(true)
    {
        return Ok(false);
    }
    file.set_modified(std::time::SystemTime::now())
        .map_err(|source| io_error("renew", path, source))?;
    Ok(true)
}

/// Who holds the lock at `path`, if anyone. An empty or unparsable lock file
/// is [`LockError::Unreadable`], not "unlocked".
pub fn read_opt(path: &Path) -> Result<Option<LockInfo>, LockError> {
    match inspect(path)? {
        Found::Absent => Ok(None),
        Found::Held(info) => Ok(Some(info)),
        Found::Unreadable { reason, .. } => Err(LockError::Unreadable {
            path: path.to_path_buf(),
            reason,
        }),
    }
}

/// What [`unlock`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unlocked {
    Holder(Box<LockInfo>),
    /// An unreadable lock file, and why it was unreadable.
    Unreadable {
        reason: String,
    },
}

/// Removes the lock at `path` whose id is `id`: when it is stale, or with
/// `force` even while its lease is live. With `force` and no id, removes an
/// unreadable lock file (a readable one always needs its id).
pub fn unlock(path: &Path, id: Option<&str>, force: bool) -> Result<Unlocked, LockError> {
    let (removal, unlocked) = match (inspect(path)?, id) {
        (Found::Absent, _) => return Err(LockError::NotLocked),
        (Found::Unreadable { reason, stamp, .. }, None) if force => (
            remove_if(path, Judged::Unreadable(stamp))?,
            Unlocked::Unreadable { reason },
        ),
        (Found::Unreadable { reason, .. }, _) => {
            return Err(LockError::Unreadable {
                path: path.to_path_buf(),
                reason,
            });
        }
        (Found::Held(holder), None) => {
            return Err(LockError::IdRequired {
                holder: Box::new(holder),
            });
        }
        (Found::Held(holder), Some(id)) if holder.id != id => {
            return Err(LockError::WrongId {
                given: id.to_string(),
                holder: Box::new(holder),
            });
        }
        (Found::Held(holder), Some(_)) if force => (
            remove_if(path, Judged::Id(&holder.id))?,
            Unlocked::Holder(Box::new(holder)),
        ),
        (Found::Held(holder), Some(_)) if holder.is_stale() => (
            remove_if(path, Judged::Stale(&holder))?,
            Unlocked::Holder(Box::new(holder)),
        ),
        (Found::Held(holder), Some(_)) => {
            return Err(LockError::Live {
                holder: Box::new(holder),
            });
        }
    };
    match removal {
        Removal::Removed => Ok(unlocked),
        Removal::Gone => Err(LockError::NotLocked),
        Removal::PutBack | Removal::Displaced => Err(LockError::Changed {
            path: path.to_path_buf(),
        }),
    }
}

/// What a lock file holds.
enum Found {
    Absent,
    Held(LockInfo),
    Unreadable {
        reason: String,
        stamp: FileStamp,
        /// Since it was last modified.
        age: Duration,
    },
}

/// Which file, and which version of it: to tell whether a lock file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileStamp {
    fn of(meta: &fs::Metadata) -> Self {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

fn inspect(path: &Path) -> Result<Found, LockError> {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Absent),
        Err(source) => return Err(io_error("read", path, source)),
    };
    // Stamp and contents come from one open file, so they describe the same version.
    let meta = file
        .metadata()
        .map_err(|source| io_error("read", path, source))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| io_error("read", path, source))?;
    let reason = if bytes.is_empty() {
        "empty".to_string()
    } else {
        match serde_json::from_slice::<LockInfo>(&bytes) {
            Ok(mut info) => {
                // The heartbeat renews the file's modification time.
                if let Ok(modified) = meta.modified() {
                    info.note_renewal(modified);
                }
                return Ok(Found::Held(info));
            }
            Err(e) => e.to_string(),
        }
    };
    Ok(Found::Unreadable {
        reason,
        stamp: FileStamp::of(&meta),
        age: meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .unwrap_or_default(),
    })
}

/// What a run saw in the lock file when it decided to remove it.
#[derive(Debug, Clone, Copy)]
enum Judged<'a> {
    /// A stale lock: removed only if it still has this id and was not renewed since.
    Stale(&'a LockInfo),
    /// The lock with this id, however recently renewed.
    Id(&'a str),
    /// An unreadable file: removed only if it is still this file, unchanged.
    Unreadable(FileStamp),
}

/// What became of an attempt to remove a lock.
#[derive(Debug, PartialEq, Eq)]
enum Removal {
    Removed,
    /// The file was no longer the one judged (renewed, or replaced by another
    /// run) and is back in place.
    PutBack,
    /// As `PutBack`, but another lock appeared meanwhile: the displaced file
    /// is left as `<lock>.<uuid>.broken`.
    Displaced,
    /// There was no lock file any more.
    Gone,
}

/// Removes the lock at `path` only if it is still what was `judged`: the file
/// is first renamed to a private name, so what is checked is what is deleted;
/// a file that is not the one judged is linked back (never over a new lock).
fn remove_if(path: &Path, judged: Judged<'_>) -> Result<Removal, LockError> {
    match move_aside(path)? {
        Some(aside) => settle(path, &aside, judged),
        None => Ok(Removal::Gone),
    }
}

/// Renames the lock file to a private `<lock>.<uuid>.broken`; `None` when
/// there is none.
fn move_aside(path: &Path) -> Result<Option<PathBuf>, LockError> {
    let aside = sibling(path, &format!("{}.broken", uuid::Uuid::new_v4()));
    match fs::rename(path, &aside) {
        Ok(()) => Ok(Some(aside)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io_error("move aside", path, source)),
    }
}

/// Deletes the moved-aside lock file if it is what was `judged`, else puts
/// it back (never over a lock placed meanwhile).
fn settle(path: &Path, aside: &Path, judged: Judged<'_>) -> Result<Removal, LockError> {
    let same = match (judged, inspect(aside)) {
        (Judged::Stale(seen), Ok(Found::Held(now))) => {
            now.id == seen.id && now.renewed == seen.renewed
        }
        (Judged::Id(id), Ok(Found::Held(now))) => now.id == id,
        (Judged::Unreadable(seen), Ok(Found::Unreadable { stamp, .. })) => stamp == seen,
        _ => false,
    };
    if same {
        fs::remove_file(aside).map_err(|source| io_error("remove", aside, source))?;
        return Ok(Removal::Removed);
    }
    match fs::hard_link(aside, path) {
        Ok(()) => {
            let _ = fs::remove_file(aside);
            Ok(Removal::PutBack)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Removal::Displaced),
        Err(source) => Err(io_error("put back", aside, source)),
    }
}

/// Puts `info` at `path` unless a lock file is there; true when it did.
fn place(path: &Path, info: &LockInfo) -> Result<bool, LockError> {
    let tmp = write_temp(path, info)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(io_error("create", path, source)),
    }
}

/// Writes `info` whole to a new 0600 temp file next to `path`, fsynced.
fn write_temp(path: &Path, info: &LockInfo) -> Result<PathBuf, LockError> {
    let tmp = sibling(path, &format!("{}.tmp", uuid::Uuid::new_v4()));
    let body = serde_json::to_vec_pretty(info)
        .map_err(|e| io_error("write", &tmp, std::io::Error::other(e)))?;
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(&body)?;
            file.sync_all()
        });
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("write", &tmp, source));
    }
    Ok(tmp)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> LockError {
    LockError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // kill(0, …) would ask about our own process group.
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for the process's existence.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This process's PID namespace (`pid:[4026531836]`), empty if unknown.
fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_string())
        .unwrap_or_default()
}

fn pid_namespace() -> String {
    fs::read_link("/proc/self/ns/pid")
        .map(|target| target.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// This machine's host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".to_string();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

pub fn current_user() -> String {
    crate::env::user_opt().unwrap_or_else(|| {
        // SAFETY: getuid has no preconditions.
        format!("uid {}", unsafe { libc::getuid() })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Above pid_max: no such process.
    const DEAD_PID: u32 = 0x3fff_fff0;

    /// Writes a lock as its holder would have left it: the file's
    /// modification time is its last heartbeat.
    fn write_lock(path: &Path, info: &LockInfo) {
        fs::write(path, serde_json::to_string(info).unwrap()).unwrap();
        let last = if info.renewed.is_empty() {
            &info.created
        } else {
            &info.renewed
        };
        if let Ok(at) =
            time::OffsetDateTime::parse(last, &time::format_description::well_known::Rfc3339)
        {
            let file = fs::File::options().write(true).open(path).unwrap();
            file.set_modified(at.into()).unwrap();
        }
    }

    /// A lock last renewed `secs` ago.
    fn renewed_ago(mut info: LockInfo, secs: i64) -> LockInfo {
        let then = time::OffsetDateTime::now_utc() - time::Duration::seconds(secs);
        info.renewed = then
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        info
    }

    fn set_age(path: &Path, age: Duration) {
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(std::time::SystemTime::now() - age)
            .unwrap();
    }

    #[test]
    fn second_lock_names_the_holder_and_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json.lock");
        let first = acquire(&path, LockInfo::for_this_process("apply"), DEFAULT_TTL).unwrap();
        let err = acquire(&path, LockInfo::for_this_process("destroy"), DEFAULT_TTL).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`apply`")
                && msg.contains(&std::process::id().to_string())
                && msg.contains("renewed 0s ago"),
            "{msg}"
        );
        let hint = err.hint().unwrap();
        assert!(hint.contains("wait for that run"), "{hint}");
        assert!(hint.contains("--force"), "{hint}");
        drop(first);
        assert!(read_opt(&path).unwrap().is_none());
        assert!(acquire(&path, LockInfo::for_this_process("apply"), DEFAULT_TTL).is_ok());
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "s.json.lock")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_dead_holder_on_this_host_in_our_pid_namespace_is_reclaimed_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json.lock");
        let mut dead = LockInfo::for_this_process("apply");
        dead.pid = DEAD_PID;
        write_lock(&path, &dead);
        assert_eq!(
            dead.staleness().reason,
            Some(StaleReason::HolderGone),
            "{:?}",
            dead.staleness()
        );
        let guard = acquire(&path, LockInfo::for_this_process("plan"), DEFAULT_TTL).unwrap();
        assert_eq!(
            guard.reclaimed().map(|i| i.id.as_str()),
            Some(dead.id.as_str())
        );
        assert_eq!(read_opt(&path).unwrap().unwrap().id, guard.info().id);
    }

    #[test]
    fn a_dead_pid_on_another_machine_with_our_host_name_is_stale_only_after_its_ttl() {
        // A cloned machine: same host name, root PID namespace, another boot.
        let mut other = LockInfo::for_this_process("apply");
        other.pid = DEAD_PID;
        other.boot_id = "00000000-0000-0000-0000-000000000000".into();
        other.ttl_secs = 30;
        assert_eq!(other.staleness().reason, None, "{:?}", other.staleness());
        let renewed = clock::parse_rfc3339_opt(&other.renewed).unwrap();
        assert!(!other.staleness_at(renewed + 30).is_stale());
        assert_eq!(
            other.staleness_at(renewed + 31).reason,
            Some(StaleReason::Expired)
        );
    }

    #[test]
    fn a_dead_pid_in_another_pid_namespace_is_stale_only_after_its_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json.lock");
        // Another container on this host, with the same host name.
        let mut other = LockInfo::for_this_process("apply");
        other.pid = DEAD_PID;
        other.pid_namespace = "pid:[4026532999]".into();
        other.ttl_secs = 30;
        let renewed = clock::parse_rfc3339_opt(&other.renewed).unwrap();
        assert!(!other.staleness_at(renewed).is_stale());
        assert!(!other.staleness_at(renewed + 30).is_stale());
        assert_eq!(
            other.staleness_at(renewed + 31).reason,
            Some(StaleReason::Expired)
        );
        write_lock(&path, &other);
        let err = acquire(&path, LockInfo::for_this_process("plan"), DEFAULT_TTL).unwrap_err();
        assert!(matches!(err, LockError::Held { .. }), "{err}");

        let expired = renewed_ago(other, 31);
        write_lock(&path, &expired);
        let guard = acquire(&path, LockInfo::for_this_process("plan"), DEFAULT_TTL).unwrap();
        assert_eq!(guard.reclaimed(), Some(&expired));
    }

    #[test]
    fn a_lock_from_an_older_version_counts_from_created_with_the_default_ttl() {
        let old = serde_json::json!({"id": "abc", "user": "jenkins", "host": "agent-7",
            "pid": 1, "created": "2026-01-01T00:00:00Z", "command": "slipway apply"});
        let info: LockInfo = serde_json::from_value(old).unwrap();
        assert_eq!(info.ttl_secs, DEFAULT_TTL.as_secs());
        let created = clock::parse_rfc3339_opt("2026-01-01T00:00:00Z").unwrap();
        assert!(!info.staleness_at(created + 30).is_stale());
        assert_eq!(
            info.staleness_at(created + 31).reason,
            Some(StaleReason::Expired)
        );
    }

    #[test]
    fn a_live_holder_on_another_host_is_not_taken_over_and_needs_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json.lock");
        let mut other = LockInfo::for_this_process("apply");
        other.host = "jenkins-agent-7".into();
        other.pid = DEAD_PID;
        write_lock(&path, &other);
        let err = acquire(&path, LockInfo::for_this_process("plan"), DEFAULT_TTL).unwrap_err();
        assert!(err.to_string().contains("jenkins-agent-7"));
        let wrong = unlock(&path, Some("nope"), false).unwrap_err();
        assert!(matches!(wrong, LockError::WrongId { .. }));
        let live = unlock(&path, Some(&other.id), false).unwrap_err();
        assert!(matches!(live, LockError::Live { .. }), "{live}");
        assert!(live.hint().unwrap().contains("--force"));
        let no_id = unlock(&path, None, true).unwrap_err();
        assert!(matches!(no_id, LockError::IdRequired { .. }), "{no_id}");
        assert!(read_opt(&path).unwrap().is_some(), "refusals leave it");
        assert_eq!(
            unlock(&path, Some(&other.id), true).unwrap(),
            Unlocked::Holder(Box::new(other))
        );
        assert!(read_opt(&path).unwrap().is_none());
    }

    #[test]
    fn a_stale_lock_is_unlocked_by_id_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json.lock");
        let mut other = LockInfo::for_this_process("apply");
        other.host = "jenkins-agent-7".into();
        let other = renewed_ago(other, 60);
        write_lock(&path, &other);
        assert_eq!(
            unlock(&path, Some(&other.id), false).unwrap(),
            Unlocked::Holder(Box::new(other))
        );
        assert!(read_opt(&path).unwrap().is_none());
    }

    #[test]
    fn an_empty_lock_file_is_reported_and_recoverable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json.lock");
        fs::write(&path, "").unwrap();
        let err = read_opt(&path).unwrap_err();
        assert!(
            matches!(&err, LockError::Unreadable { reason, .. } if reason == "empty"),
            "{err}"
        );
        let err = acquire(&path, LockInfo::for_this_process("apply"), DEFAULT_TTL).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("s.json.lock") && msg.contains("empty"),
            "{msg}"
        );
        assert!(err.hint().unwrap().contains("slipway state unlock --force"));
        assert!(matches!(
            unlock(&path, None, false),
            Err(LockError::Unreadable { .. })
        ));
        assert_eq!(
            unlock(&path, None, true).unwrap(),
            Unlocked::Unreadable {
                reason: "empty".into()
            }
        );
        assert!(acquire(&path, LockInfo::for_this_process("apply"), DEFAULT_TTL).is_ok());
    }

    #[test]
    fn a_damaged_lock_file_older_than_the_ttl_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json.lock");
        fs::write(&path, "{\"id\": \"to").unwrap();
        set_age(&path, Duration::from_secs(10));
        let err = acquire(&path, LockInfo::for_this_process("apply"), DEFAULT_TTL).unwrap_err();
        assert!(matches!(err, LockError::Unreadable { .. }), "{err}");
        set_age(&path, Duration::from_secs(31));
        let guard = acquire(&path, LockInfo::for_this_process("apply"), DEFAULT_TTL).unwrap();
        assert!(
            guard
                .cleared_unreadable()
                .is_some_and(|r| r.contains("EOF"))
        );
        assert_eq!(read_opt(&path).unwrap().unwrap().id, guard.info().id);
    }

    #[test]
    fn a_reader_racing_acquires_never_sees_a_partial_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json.lock");
        let done = Arc::new(AtomicBool::new(false));
        let takers: Vec<_> = (0..3)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..300 {
                        drop(acquire(
                            &path,
                            LockInfo::for_this_process("apply"),
                            DEFAULT_TTL,
                        ));
                    }
                })
            })
            .collect();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (path, done) = (path.clone(), Arc::clone(&done));
                std::thread::spawn(move || {
                    let mut seen = 0;
                    while !done.load(Ordering::SeqCst) {
                        if let Ok(bytes) = fs::read(&path) {
                            if let Err(e) = serde_json::from_slice::<LockInfo>(&bytes) {
                                panic!("read a partial lock ({e}): {bytes:?}");
                            }
                            seen += 1;
                        }
                    }
                    seen
                })
            })
            .collect();
        for t in takers {
            t.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
        let seen: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert!(seen > 0, "the readers saw no lock at all");
        assert!(read_opt(&path).unwrap().is_none());
    }

    #[test]
    fn a_renewed_lock_is_never_stale_and_the_guard_notices_losing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json.lock");
        let guard = acquire(
            &path,
            LockInfo::for_this_process("apply"),
            Duration::from_secs(2),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(3200));
        let held = read_opt(&path).unwrap().unwrap();
        assert_eq!(held.id, guard.info().id);
        assert_eq!(held.ttl_secs, 2);
        assert!(!held.is_stale(), "{:?}", held.staleness());
        assert_ne!(held.renewed, guard.info().renewed, "renewed since");
        assert!(!guard.lost());

        // Someone force-unlocks it and another run takes it.
        unlock(&path, Some(&guard.info().id), true).unwrap();
        let other = acquire(&path, LockInfo::for_this_process("destroy"), DEFAULT_TTL).unwrap();
        let start = std::time::Instant::now();
        while !guard.lost() {
            assert!(start.elapsed() < Duration::from_secs(5), "never noticed");
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(guard);
        assert_eq!(
            read_opt(&path).unwrap().unwrap().id,
            other.info().id,
            "the old guard leaves the new lock alone"
        );
    }

    #[test]
    fn a_late_heartbeat_never_overwrites_or_renews_a_lock_taken_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json.lock");
        let guard = acquire(
            &path,
            LockInfo::for_this_process("apply"),
            Duration::from_secs(2),
        )
        .unwrap();
        // While this run was suspended its lease expired, and another run
        // broke it and took the lock (written whole, then renamed in).
        let mut other = LockInfo::for_this_process("destroy");
        other.host = "jenkins-agent-7".into();
        let other = renewed_ago(other, 60);
        let tmp = dir.path().join("other.tmp");
        write_lock(&tmp, &other);
        fs::rename(&tmp, &path).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert!(guard.lost());
        let now = read_opt(&path).unwrap().unwrap();
        assert_eq!(now.id, other.id, "not overwritten");
        assert!(now.is_stale(), "not renewed by the old holder: {now:?}");
        drop(guard);
        assert_eq!(read_opt(&path).unwrap().unwrap().id, other.id);
    }

    #[test]
    fn dropping_the_guard_does_not_wait_for_the_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json.lock");
        let guard = acquire(&path, LockInfo::for_this_process("apply"), DEFAULT_TTL).unwrap();
        let start = std::time::Instant::now();
        drop(guard);
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(!path.exists());
    }

    #[test]
    fn breaking_a_stale_lock_spares_one_taken_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json.lock");
        let mut stale = LockInfo::for_this_process("apply");
        stale.host = "jenkins-agent-7".into();
        let stale = renewed_ago(stale, 60);
        assert!(stale.is_stale());
        // Judged stale, but before it is broken another run takes the lock…
        let fresh = LockInfo::for_this_process("destroy");
        write_lock(&path, &fresh);
        assert_eq!(
            remove_if(&path, Judged::Stale(&stale)).unwrap(),
            Removal::PutBack
        );
        assert_eq!(read_opt(&path).unwrap(), Some(fresh.clone()));
        // …or the holder renews it.
        let renewed = renewed_ago(stale.clone(), 0);
        write_lock(&path, &renewed);
        assert_eq!(
            remove_if(&path, Judged::Stale(&stale)).unwrap(),
            Removal::PutBack
        );
        assert_eq!(read_opt(&path).unwrap(), Some(renewed));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["s.json.lock"]);

        write_lock(&path, &stale);
        assert_eq!(
            remove_if(&path, Judged::Stale(&stale)).unwrap(),
            Removal::Removed
        );
        assert!(!path.exists());
    }

    #[test]
    fn a_lock_displaced_while_a_stale_one_is_broken_is_left_aside_and_its_holder_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json.lock");
        let mut stale = LockInfo::for_this_process("apply");
        stale.host = "jenkins-agent-7".into();
        let stale = renewed_ago(stale, 60);
        // Judged stale; meanwhile another run breaks it and takes the lock…
        let taken = LockInfo::for_this_process("apply");
        assert!(place(&path, &taken).unwrap());
        let meta = fs::metadata(&path).unwrap();
        let ours = (meta.dev(), meta.ino());
        // …and this one moves that lock aside, and while it is aside a third
        // run takes the free lock.
        let aside = move_aside(&path).unwrap().unwrap();
        let third = LockInfo::for_this_process("destroy");
        assert!(place(&path, &third).unwrap());
        assert_eq!(
            settle(&path, &aside, Judged::Stale(&stale)).unwrap(),
            Removal::Displaced
        );
        // The third run's lock is untouched; the displaced one is kept aside.
        assert_eq!(read_opt(&path).unwrap().map(|l| l.id), Some(third.id));
        assert_eq!(
            read_opt(&aside).unwrap().map(|l| l.id),
            Some(taken.id.clone())
        );
        assert!(aside.to_string_lossy().ends_with(".broken"), "{aside:?}");
        // The run it belonged to learns at its next heartbeat that the lock
        // is no longer its own, and stops.
        assert!(!renew(&path, ours, &taken.id).unwrap());
    }
}
