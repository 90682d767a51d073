//! The run lock: one mutating run per stack at a time. The lock names its
//! holder so the loser can say who has it.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
}

impl LockInfo {
    /// Describes this process running `command`.
    pub fn for_this_process(command: &str) -> Self {
        LockInfo {
            id: uuid::Uuid::new_v4().to_string(),
            user: current_user(),
            host: hostname(),
            pid: std::process::id(),
            created: crate::clock::now_rfc3339(),
            command: command.to_string(),
        }
    }

    /// True when the holder ran on this host and its process is gone.
    pub fn is_stale(&self) -> bool {
        self.host == hostname() && !process_alive(self.pid)
    }
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` by {}@{} (pid {}) since {}, lock id `{}`",
            self.command, self.user, self.host, self.pid, self.created, self.id
        )
    }
}

/// Why a lock could not be taken or released.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the state is locked: {holder}")]
    Held {
        holder: Box<LockInfo>,
        path: PathBuf,
    },
    #[error("lock id `{given}` does not match the lock held ({holder})")]
    WrongId {
        given: String,
        holder: Box<LockInfo>,
    },
    #[error("the state is not locked")]
    NotLocked,
    #[error("lock file `{}` is unreadable; if no run is active, delete it", path.display())]
    Corrupt { path: PathBuf },
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
                "the holder's process is gone; run `slipway state unlock {}` if no run is active",
                holder.id
            )),
            LockError::Held { holder, .. } => Some(format!(
                "wait for that run to finish; if it died on another machine, run `slipway state unlock {}`",
                holder.id
            )),
            _ => None,
        }
    }
}

/// A held lock, released on drop.
#[derive(Debug)]
pub struct LockGuard {
    path: PathBuf,
    info: LockInfo,
    /// A stale lock this run took over, reported to the user.
    reclaimed: Option<LockInfo>,
}

impl LockGuard {
    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    pub fn reclaimed(&self) -> Option<&LockInfo> {
        self.reclaimed.as_ref()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Only remove the file if it is still ours (someone may have force-unlocked).
        if read_opt(&self.path)
            .ok()
            .flatten()
            .is_some_and(|held| held.id == self.info.id)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Takes the lock at `path`. A lock left by a dead process on this host is
/// taken over (and reported through [`LockGuard::reclaimed`]).
pub fn acquire(path: &Path, info: LockInfo) -> Result<LockGuard, LockError> {
    let mut reclaimed = None;
    for _ in 0..3 {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                let body = serde_json::to_string_pretty(&info).unwrap_or_default();
                file.write_all(body.as_bytes())
                    .and_then(|_| file.sync_all())
                    .map_err(|source| LockError::Io {
                        action: "write",
                        path: path.to_path_buf(),
                        source,
                    })?;
                return Ok(LockGuard {
                    path: path.to_path_buf(),
                    info,
                    reclaimed,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let Some(holder) = read_opt(path)? else {
                    continue;
                };
                if holder.is_stale() {
                    // Remove only if nobody replaced it meanwhile.
                    if read_opt(path)?.is_some_and(|again| again.id == holder.id) {
                        let _ = std::fs::remove_file(path);
                    }
                    reclaimed = Some(holder);
                    continue;
                }
                return Err(LockError::Held {
                    holder: Box::new(holder),
                    path: path.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(LockError::Io {
                    action: "create",
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    match read_opt(path)? {
        Some(holder) => Err(LockError::Held {
            holder: Box::new(holder),
            path: path.to_path_buf(),
        }),
        None => Err(LockError::NotLocked),
    }
}

/// Who holds the lock at `path`, if anyone.
pub fn read_opt(path: &Path) -> Result<Option<LockInfo>, LockError> {
    match std::fs::read_to_string(path) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(info) => Ok(Some(info)),
            // A lock being written right now is briefly empty.
            Err(_) if text.is_empty() => Ok(None),
            Err(_) => Err(LockError::Corrupt {
                path: path.to_path_buf(),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LockError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Removes the lock at `path` if its id is `id`.
pub fn force_unlock(path: &Path, id: &str) -> Result<LockInfo, LockError> {
    let holder = read_opt(path)?.ok_or(LockError::NotLocked)?;
    if holder.id != id {
        return Err(LockError::WrongId {
            given: id.to_string(),
            holder: Box::new(holder),
        });
    }
    std::fs::remove_file(path).map_err(|source| LockError::Io {
        action: "remove",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(holder)
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for the process's existence.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
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

    #[test]
    fn second_lock_names_the_holder_and_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json.lock");
        let first = acquire(&path, LockInfo::for_this_process("apply")).unwrap();
        let err = acquire(&path, LockInfo::for_this_process("destroy")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`apply`") && msg.contains(&std::process::id().to_string()),
            "{msg}"
        );
        assert!(err.hint().unwrap().contains("wait for that run"));
        drop(first);
        assert!(read_opt(&path).unwrap().is_none());
        assert!(acquire(&path, LockInfo::for_this_process("apply")).is_ok());
    }

    #[test]
    fn a_dead_holder_on_this_host_is_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json.lock");
        let mut dead = LockInfo::for_this_process("apply");
        dead.pid = 0x3fff_fff0; // above pid_max: no such process
        std::fs::write(&path, serde_json::to_string(&dead).unwrap()).unwrap();
        let guard = acquire(&path, LockInfo::for_this_process("plan")).unwrap();
        assert_eq!(
            guard.reclaimed().map(|i| i.id.as_str()),
            Some(dead.id.as_str())
        );
    }

    #[test]
    fn a_holder_on_another_host_is_never_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json.lock");
        let mut other = LockInfo::for_this_process("apply");
        other.host = "jenkins-agent-7".into();
        other.pid = 0x3fff_fff0;
        std::fs::write(&path, serde_json::to_string(&other).unwrap()).unwrap();
        let err = acquire(&path, LockInfo::for_this_process("plan")).unwrap_err();
        assert!(err.to_string().contains("jenkins-agent-7"));
        let wrong = force_unlock(&path, "nope").unwrap_err();
        assert!(matches!(wrong, LockError::WrongId { .. }));
        force_unlock(&path, &other.id).unwrap();
        assert!(read_opt(&path).unwrap().is_none());
    }
}
