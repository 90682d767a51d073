//! The state: what slipway created, per address, with its cloud identifiers
//! and last-known attributes. Versioned, serial-numbered, lineage-tagged.

pub mod local;
pub mod lock;
pub mod s3;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::addr::Address;
use crate::resource::{Attrs, Live};

pub use local::LocalBackend;
pub use lock::{LockError, LockGuard, LockInfo};
pub use s3::S3Backend;

/// The on-disk format version this build writes. 2 added `protected`
/// to resources; 1 is still read (and written back as 2).
pub const FORMAT_VERSION: u32 = 2;

/// Older formats this build reads.
const READS_ALSO: &[u32] = &[1];

/// One stack's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    format_version: u32,
    slipway_version: String,
    /// Identifies one state history; a plan from another lineage is refused.
    lineage: String,
    /// Incremented on every write.
    serial: u64,
    stack: String,
    /// The id of the last saved plan applied, so a plan runs at most once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_applied_plan: Option<String>,
    resources: BTreeMap<Address, ResourceState>,
    /// Each resource's text in the file, kept between writes: an apply
    /// writes the state every time resources finish, and re-serialising
    /// thousands of unchanged resources each time made its CPU grow with
    /// the square of the stack.
    #[serde(skip)]
    texts: Texts,
}

/// Serialised resources by address; never part of what a state is.
#[derive(Debug, Default)]
struct Texts(std::sync::Mutex<std::collections::HashMap<Address, std::sync::Arc<str>>>);

impl Clone for Texts {
    fn clone(&self) -> Self {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Texts(std::sync::Mutex::new(map.clone()))
    }
}

impl PartialEq for Texts {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// What the state knows about one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceState {
    pub id: String,
    pub attributes: Attrs,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub depends_on: BTreeSet<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Changes of one group run one at a time (EKS: one Fargate profile
    /// change per cluster); kept so deletes follow the rule too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_group: Option<String>,
    /// Deleting or replacing it needs `--allow-protected`; kept so that
    /// removing a protected environment from the stack is refused too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protected: bool,
}

impl ResourceState {
    pub fn live(&self) -> Live {
        Live {
            id: self.id.clone(),
            attrs: self.attributes.clone(),
        }
    }
}

impl State {
    /// A new, empty state with a fresh lineage.
    pub fn new(stack: &str) -> Self {
        State {
            format_version: FORMAT_VERSION,
            slipway_version: env!("CARGO_PKG_VERSION").to_string(),
            lineage: uuid::Uuid::new_v4().to_string(),
            serial: 0,
            stack: stack.to_string(),
            last_applied_plan: None,
            resources: BTreeMap::new(),
            texts: Texts::default(),
        }
    }

    pub fn lineage(&self) -> &str {
        &self.lineage
    }

    pub fn serial(&self) -> u64 {
        self.serial
    }

    pub fn stack(&self) -> &str {
        &self.stack
    }

    pub fn last_applied_plan(&self) -> Option<&str> {
        self.last_applied_plan.as_deref()
    }

    pub fn set_last_applied_plan(&mut self, id: &str) {
        self.last_applied_plan = Some(id.to_string());
    }

    pub fn resources(&self) -> &BTreeMap<Address, ResourceState> {
        &self.resources
    }

    pub fn get_opt(&self, addr: &Address) -> Option<&ResourceState> {
        self.resources.get(addr)
    }

    /// Records a resource, or forgets it with `None`.
    pub fn set(&mut self, addr: &Address, resource: Option<ResourceState>) {
        self.texts
            .0
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .remove(addr);
        match resource {
            Some(r) => {
                self.resources.insert(addr.clone(), r);
            }
            None => {
                self.resources.remove(addr);
            }
        }
    }

    /// Parses a state file, refusing unknown or newer formats.
    pub fn from_json(text: &str, path: &std::path::Path) -> Result<State, StateError> {
        #[derive(Deserialize)]
        struct Header {
            format_version: Option<u32>,
            slipway_version: Option<String>,
        }
        let header: Header = serde_json::from_str(text).map_err(|source| StateError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        match header.format_version {
            Some(FORMAT_VERSION) => {}
            Some(v) if READS_ALSO.contains(&v) => {}
            Some(v) if v > FORMAT_VERSION => {
                return Err(StateError::Newer {
                    path: path.to_path_buf(),
                    version: v,
                    writer: header.slipway_version.unwrap_or_else(|| "unknown".into()),
                });
            }
            other => {
                return Err(StateError::Format {
                    path: path.to_path_buf(),
                    version: other,
                });
            }
        }
        let mut state: State = serde_json::from_str(text).map_err(|source| StateError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        // Format 1 did not record protection: until the stack says
        // otherwise, every environment's resource counts as protected, so an
        // environment removed right after upgrading is still refused.
        if header.format_version == Some(1) {
            for r in state.resources.values_mut() {
                r.protected |= r.env.is_some();
            }
        }
        Ok(state)
    }

    /// Serialises, bumping nothing: callers bump the serial through [`State::next_serial`].
    /// The text is what `serde_json::to_string_pretty` makes of the whole
    /// state, with each resource's part serialised once and reused until
    /// [`State::set`] changes it.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Head<'a> {
            format_version: u32,
            slipway_version: &'a str,
            lineage: &'a str,
            serial: u64,
            stack: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            last_applied_plan: Option<&'a str>,
        }
        let head = Head {
            format_version: self.format_version,
            slipway_version: &self.slipway_version,
            lineage: &self.lineage,
            serial: self.serial,
            stack: &self.stack,
            last_applied_plan: self.last_applied_plan.as_deref(),
        };
        let head = serde_json::to_string_pretty(&head).unwrap_or_else(|_| String::from("{}"));
        let mut out = String::with_capacity(head.len() + 64);
        // `{ ...fields\n}` without its closing brace.
        out.push_str(head.strip_suffix("\n}").unwrap_or("{"));
        out.push_str(",\n  \"resources\": {");
        if self.resources.is_empty() {
            out.push_str("}\n}\n");
            return out;
        }
        let mut texts = self.texts.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut first = true;
        for (addr, resource) in &self.resources {
            let text = texts
                .entry(addr.clone())
                .or_insert_with(|| resource_text(addr, resource).into());
            out.push_str(if first { "\n    " } else { ",\n    " });
            out.push_str(text);
            first = false;
        }
        out.push_str("\n  }\n}\n");
        out
    }

    pub(crate) fn next_serial(&mut self) {
        self.serial += 1;
        self.format_version = FORMAT_VERSION;
        self.slipway_version = env!("CARGO_PKG_VERSION").to_string();
    }
}

/// `"addr": {...}` as it sits in the file, two levels deep.
fn resource_text(addr: &Address, resource: &ResourceState) -> String {
    let key = serde_json::to_string(addr).unwrap_or_default();
    let value = serde_json::to_string_pretty(resource).unwrap_or_else(|_| String::from("{}"));
    // JSON strings escape their newlines, so every newline here is the
    // layout's and takes the two levels' indent.
    format!("{key}: {}", value.replace('\n', "\n    "))
}

/// Where the state is kept: a local file or an S3 object.
#[derive(Debug)]
pub enum Backend {
    Local(LocalBackend),
    S3(Box<S3Backend>),
}

impl Backend {
    /// `state/smallcase.json`, `s3://bucket/key`.
    pub fn describe(&self) -> String {
        match self {
            Backend::Local(l) => l.path().display().to_string(),
            Backend::S3(s) => s.location().url(),
        }
    }

    /// Where the lock is: `state/smallcase.json.lock`, `s3://bucket/key.lock`.
    pub fn describe_lock(&self) -> String {
        match self {
            Backend::Local(l) => l.lock_path().display().to_string(),
            Backend::S3(s) => format!("s3://{}/{}", s.location().bucket, s.location().lock_key()),
        }
    }

    pub fn load_opt(&self, stack: &str) -> Result<Option<State>, StateError> {
        match self {
            Backend::Local(l) => l.load_opt(stack),
            Backend::S3(s) => s.load_opt(stack),
        }
    }

    pub fn write(&self, state: &mut State) -> Result<(), StateError> {
        match self {
            Backend::Local(l) => l.write(state),
            Backend::S3(s) => s.write(state),
        }
    }

    /// Writes `state` exactly as it is, serial and lineage kept (for
    /// `state migrate`, after [`Backend::load_opt`] read what was there).
    pub fn put_exact(&self, state: &State) -> Result<(), StateError> {
        match self {
            Backend::Local(l) => l.put_exact(state),
            Backend::S3(s) => s.put_exact(state),
        }
    }

    pub fn lock(&self, command: &str) -> Result<LockGuard, StateError> {
        match self {
            Backend::Local(l) => l.lock(command),
            Backend::S3(s) => s.lock(command, lock::ttl()),
        }
    }

    pub fn lock_status(&self) -> Result<Option<LockInfo>, StateError> {
        match self {
            Backend::Local(l) => l.lock_status(),
            Backend::S3(s) => s.lock_status(),
        }
    }

    pub fn unlock(&self, id: Option<&str>, force: bool) -> Result<lock::Unlocked, StateError> {
        match self {
            Backend::Local(l) => l.unlock(id, force),
            Backend::S3(s) => s.unlock(id, force),
        }
    }
}

/// Errors reading, writing or locking state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file `{}` is not valid slipway state; it was left untouched", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "state file `{}` was written by slipway {writer} (format {version}); this is slipway {} (format {FORMAT_VERSION}) — upgrade slipway",
        path.display(),
        env!("CARGO_PKG_VERSION")
    )]
    Newer {
        path: PathBuf,
        version: u32,
        writer: String,
    },
    #[error("state file `{}` has format version {version:?}, which this slipway cannot read", path.display())]
    Format { path: PathBuf, version: Option<u32> },
    #[error("state file `{}` belongs to stack `{found}`, not `{expected}`", path.display())]
    WrongStack {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("cannot {action} `{}`", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state `{}` changed underneath this run (serial {found} on disk, {expected} expected); another run wrote it",
        path.display()
    )]
    Conflict {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
}

impl StateError {
    /// What to do about it, printed as the error's `hint:`.
    pub fn hint(&self) -> Option<String> {
        match self {
            StateError::Parse { path, .. } | StateError::Format { path, .. } => {
                Some(restore_hint(path))
            }
            StateError::Io { path, source, .. }
                if source.kind() == std::io::ErrorKind::InvalidData =>
            {
                Some(restore_hint(path))
            }
            StateError::Io { path, .. } => Some(format!(
                "check that `{}` and its directory exist and are readable and writable by this user",
                path.display()
            )),
            StateError::WrongStack { .. } => Some(
                "pass this stack's own state with `--state PATH`, or the stack the state belongs to with `--stack FILE`"
                    .to_string(),
            ),
            StateError::Conflict { .. } => {
                Some("run `slipway plan` again to see the current state".to_string())
            }
            StateError::Lock(l) => l.hint(),
            // The message already says: upgrade slipway.
            StateError::Newer { .. } => None,
        }
    }
}

/// A damaged state is never overwritten: say where the previous version is.
fn restore_hint(path: &std::path::Path) -> String {
    let shown = path.display().to_string();
    if shown.starts_with("s3://") {
        format!(
            "slipway will not overwrite it; restore an earlier version of `{shown}` (the bucket keeps every version) or repair it by hand, then run `slipway plan` (docs/state.md)"
        )
    } else {
        format!(
            "slipway will not overwrite it; restore the previous version, `{shown}.backup`, or repair the file by hand, then run `slipway plan` (docs/state.md)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What serde makes of the whole state, the text `to_json` must equal.
    fn whole(s: &State) -> String {
        format!("{}\n", serde_json::to_string_pretty(s).unwrap())
    }

    #[test]
    fn the_text_kept_per_resource_is_the_whole_states_text_after_every_change() {
        let mut s = State::new("smallcase");
        assert_eq!(s.to_json(), whole(&s));
        let resource = |id: &str, n: u64| ResourceState {
            id: id.into(),
            attributes: [
                (
                    "nested".to_string(),
                    json!({"a": [1, {"b": "x\ny"}], "e": {}, "l": []}),
                ),
                ("n".to_string(), json!(n)),
            ]
            .into(),
            depends_on: ["aws.vpc.main".parse().unwrap()].into(),
            env: Some("blue".into()),
            serial_group: None,
            protected: n.is_multiple_of(2),
        };
        let addrs: Vec<Address> = ["aws.vpc.main", "aws.subnet.a", "k8s.namespace.blue"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        for (n, addr) in addrs.iter().enumerate() {
            s.set(addr, Some(resource(&format!("id-{n}"), n as u64)));
            assert_eq!(s.to_json(), whole(&s));
        }
        // A changed resource is serialised again, the others reused.
        s.set(&addrs[1], Some(resource("id-new", 7)));
        s.set_last_applied_plan("plan-1");
        s.next_serial();
        let text = s.to_json();
        assert_eq!(text, whole(&s));
        assert!(text.contains("id-new") && !text.contains("id-1\""));
        let copy = s.clone();
        s.set(&addrs[0], None);
        assert_eq!(s.to_json(), whole(&s));
        assert_eq!(copy.to_json(), whole(&copy));
        let path = std::path::Path::new("state/x.json");
        assert_eq!(State::from_json(&copy.to_json(), path).unwrap(), copy);
    }

    #[test]
    fn round_trips_and_refuses_newer_formats() {
        let mut s = State::new("smallcase");
        let addr: Address = "aws.vpc.main".parse().unwrap();
        s.set(
            &addr,
            Some(ResourceState {
                id: "vpc-1".into(),
                attributes: [("cidr_block".to_string(), json!("10.0.0.0/16"))].into(),
                depends_on: BTreeSet::new(),
                env: None,
                serial_group: None,
                protected: false,
            }),
        );
        let path = std::path::Path::new("state/x.json");
        let back = State::from_json(&s.to_json(), path).unwrap();
        assert_eq!(back, s);

        let newer = s
            .to_json()
            .replace("\"format_version\": 2", "\"format_version\": 99");
        let err = State::from_json(&newer, path).unwrap_err().to_string();
        assert!(
            err.contains("format 99") && err.contains("upgrade slipway"),
            "{err}"
        );

        let err = State::from_json("{\"nope\": 1", path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid slipway state"), "{err}");
        let err = State::from_json("{}", path).unwrap_err().to_string();
        assert!(err.contains("format version None"), "{err}");

        // Format 1 (before `protected`) is read, and written back as 2.
        let v1 = s
            .to_json()
            .replace("\"format_version\": 2", "\"format_version\": 1");
        let mut old = State::from_json(&v1, path).unwrap();
        assert_eq!(old.resources(), s.resources());
        let mut with_env = s.clone();
        with_env.set(
            &addr,
            Some(ResourceState {
                env: Some("blue".into()),
                ..s.get_opt(&addr).unwrap().clone()
            }),
        );
        let v1 = with_env
            .to_json()
            .replace("\"format_version\": 2", "\"format_version\": 1");
        let upgraded = State::from_json(&v1, path).unwrap();
        assert!(
            upgraded.get_opt(&addr).unwrap().protected,
            "unknown: protected"
        );
        old.next_serial();
        assert!(old.to_json().contains("\"format_version\": 2"));
    }
}
