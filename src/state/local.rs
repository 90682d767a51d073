//! State on the local disk: `state/<stack>.json`, written atomically with the
//! previous version kept as `<file>.backup`, locked through `<file>.lock`.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::lock::{self, LockGuard, LockInfo};
use super::{State, StateError};

/// A state file on disk.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    path: PathBuf,
    /// The text this backend last read or wrote, with its serial and
    /// lineage: a file still byte-for-byte equal to it needs no parsing to
    /// know it is the version a write expects.
    seen: Arc<Mutex<Option<Seen>>>,
}

#[derive(Debug)]
struct Seen {
    serial: u64,
    lineage: String,
    text: String,
}

impl LocalBackend {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LocalBackend {
            path: path.into(),
            seen: Arc::default(),
        }
    }

    fn remember(&self, state: &State, text: String) {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Seen {
            serial: state.serial(),
            lineage: state.lineage().to_string(),
            text,
        });
    }

    /// Whether `text`, found on disk, is what this backend last saw of
    /// `state`'s version.
    fn is_seen(&self, state: &State, text: &str) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.as_ref().is_some_and(|s| {
            s.serial == state.serial() && s.lineage == state.lineage() && s.text == text
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn lock_path(&self) -> PathBuf {
        sibling(&self.path, "lock")
    }

    pub fn backup_path(&self) -> PathBuf {
        sibling(&self.path, "backup")
    }

    /// The state, or `None` when no state file exists yet.
    pub fn load_opt(&self, stack: &str) -> Result<Option<State>, StateError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    action: "read state file",
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let state = State::from_json(&text, &self.path)?;
        if state.stack() != stack {
            return Err(StateError::WrongStack {
                path: self.path.clone(),
                found: state.stack().to_string(),
                expected: stack.to_string(),
            });
        }
        self.remember(&state, text);
        Ok(Some(state))
    }

    /// Writes `state` with the next serial: the previous file becomes the
    /// backup, the new one appears atomically (temp file, fsync, rename).
    /// Refuses if the file on disk is not the version this run last saw.
    pub fn write(&self, state: &mut State) -> Result<(), StateError> {
        let expected = state.serial();
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io {
                action,
                path,
                source,
            }
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io("create state directory", dir))?;
        }
        let previous = match fs::read_to_string(&self.path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(io("read state file", &self.path)(source)),
        };
        if let Some(text) = &previous {
            if !self.is_seen(state, text) {
                let on_disk = State::from_json(text, &self.path)?;
                if on_disk.serial() != expected || on_disk.lineage() != state.lineage() {
                    return Err(StateError::Conflict {
                        path: self.path.clone(),
                        expected,
                        found: on_disk.serial(),
                    });
                }
            }
            keep_as_backup(&self.path, &self.backup_path(), text.as_bytes())?;
        }
        state.next_serial();
        let text = state.to_json();
        if let Err(e) = write_atomic(&self.path, text.as_bytes()) {
            // Keep the in-memory serial in step with the disk.
            state.serial = expected;
            return Err(e);
        }
        self.remember(state, text);
        Ok(())
    }

    /// Writes `state` exactly as it is (serial and lineage kept), the
    /// previous file kept as the backup.
    pub fn put_exact(&self, state: &State) -> Result<(), StateError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| StateError::Io {
                action: "create state directory",
                path: dir.to_path_buf(),
                source,
            })?;
        }
        match fs::read(&self.path) {
            Ok(previous) => write_atomic(&self.backup_path(), &previous)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StateError::Io {
                    action: "read state file",
                    path: self.path.clone(),
                    source,
                });
            }
        }
        write_atomic(&self.path, state.to_json().as_bytes())
    }

    pub fn lock(&self, command: &str) -> Result<LockGuard, StateError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| StateError::Io {
                action: "create state directory",
                path: dir.to_path_buf(),
                source,
            })?;
        }
        Ok(lock::acquire(
            &self.lock_path(),
            LockInfo::for_this_process(command),
            lock::ttl(),
        )?)
    }

    /// Who holds the lock, if anyone; an empty or damaged lock file is an error.
    pub fn lock_status(&self) -> Result<Option<LockInfo>, StateError> {
        Ok(lock::read_opt(&self.lock_path())?)
    }

    /// Removes the lock: see [`lock::unlock`].
    pub fn unlock(&self, id: Option<&str>, force: bool) -> Result<lock::Unlocked, StateError> {
        Ok(lock::unlock(&self.lock_path(), id, force)?)
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// Makes `backup` the file now at `path` (whose contents are `bytes`): a
/// hard link renamed into place, which copies nothing, since the file at
/// `path` is only ever replaced, never changed in place; a copy where the
/// file system has no hard links.
fn keep_as_backup(path: &Path, backup: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let tmp = sibling(backup, &format!("tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(path, &tmp).is_ok() {
        if fs::rename(&tmp, backup).is_ok() {
            return Ok(());
        }
        let _ = fs::remove_file(&tmp);
    }
    write_atomic(backup, bytes)
}

/// Writes `bytes` to `path` so that readers see the old or the new file, never
/// a mix: a 0600 temp file in the same directory, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let tmp = sibling(path, &format!("tmp.{}", std::process::id()));
    let io = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| StateError::Io {
            action,
            path: p,
            source,
        }
    };
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("sync", &tmp))?;
        fs::rename(&tmp, path).map_err(io("replace", path))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename itself durable.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("sync directory of", path))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ResourceState;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_atomically_with_backup_mode_0600_and_serials() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path().join("state/smallcase.json"));
        assert!(backend.load_opt("smallcase").unwrap().is_none());
        let mut s = State::new("smallcase");
        backend.write(&mut s).unwrap();
        assert_eq!(s.serial(), 1);
        let mode = fs::metadata(backend.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!backend.backup_path().exists());

        s.set(
            &"aws.vpc.main".parse().unwrap(),
            Some(ResourceState {
                id: "vpc-1".into(),
                attributes: Default::default(),
                depends_on: Default::default(),
                env: None,
                serial_group: None,
                protected: false,
            }),
        );
        backend.write(&mut s).unwrap();
        let loaded = backend.load_opt("smallcase").unwrap().unwrap();
        assert_eq!(loaded, s);
        assert_eq!(loaded.serial(), 2);
        let backup = State::from_json(
            &fs::read_to_string(backend.backup_path()).unwrap(),
            backend.path(),
        )
        .unwrap();
        assert_eq!(backup.serial(), 1);
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("state"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn refuses_to_overwrite_a_state_it_did_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path().join("s.json"));
        let mut a = State::new("x");
        backend.write(&mut a).unwrap();
        let mut b = backend.load_opt("x").unwrap().unwrap();
        backend.write(&mut a).unwrap();
        let err = backend.write(&mut b).unwrap_err();
        assert!(
            matches!(
                err,
                StateError::Conflict {
                    expected: 1,
                    found: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(b.serial(), 1);
    }

    #[test]
    fn unreadable_or_foreign_state_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        fs::write(&path, "{ torn").unwrap();
        let backend = LocalBackend::new(&path);
        assert!(matches!(
            backend.load_opt("x"),
            Err(StateError::Parse { .. })
        ));
        let mut s = State::new("x");
        assert!(backend.write(&mut s).is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "{ torn");

        let backend = LocalBackend::new(dir.path().join("t.json"));
        let mut other = State::new("other");
        backend.write(&mut other).unwrap();
        assert!(matches!(
            backend.load_opt("x"),
            Err(StateError::WrongStack { .. })
        ));
    }
}
