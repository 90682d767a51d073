//! Plans: what apply would do, and the drift between the last state and the
//! live cloud. Pure data and pure diffing; no I/O.

mod planner;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::addr::Address;
use crate::resource::{Expr, Live};

pub use planner::{PlanError, PlanInput, plan};

/// The format version of saved plan files.
/// 2: changes say what is protected and what goes with a replaced container.
/// 3: drift is findings (see `crate::drift`).
pub const PLAN_FORMAT_VERSION: u32 = 3;

/// What apply will do to one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    NoOp,
    Create,
    Update,
    Replace,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::NoOp => "no-op",
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
        }
    }
}

/// One planned change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub addr: Address,
    pub action: Action,
    /// The live object, when one exists.
    pub before: Option<Live>,
    /// Planned attributes; outputs not known yet are references to this
    /// resource itself. `None` for deletes.
    pub after: Option<BTreeMap<String, Expr>>,
    /// Attributes whose values differ (updates and replaces).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// Attributes that force the replacement.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replace_because: Vec<String>,
    /// Resources this one depends on (from the stack; from the state for deletes).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub depends_on: BTreeSet<Address>,
    /// What the existing object depended on when it was created (from the
    /// state): its delete, and moving it off an object, are ordered by these.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub prior_depends_on: BTreeSet<Address>,
    /// The container whose replacement replaces this object too (everything
    /// inside an EKS cluster goes with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_with: Option<Address>,
    /// Of a protected environment, or holding data: deleting or replacing
    /// it needs `--allow-protected`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protected: bool,
    /// A replacement made before the old object is deleted, so that what
    /// uses it (updated in place) moves over first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create_before_destroy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_group: Option<String>,
}

/// What the plan is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Mode {
    /// Converge on the stack.
    Apply,
    /// Delete everything, or one environment's resources.
    Destroy { env: Option<String> },
}

/// The stack file a plan was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackRef {
    pub name: String,
    pub path: String,
    pub sha256: String,
}

/// A complete plan, as printed and as saved by `plan --out`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    pub id: String,
    pub created_at: String,
    pub slipway_version: String,
    pub stack: StackRef,
    pub mode: Mode,
    /// Lineage and serial of the state the plan was made against (`None`: no state yet).
    pub state_lineage: Option<String>,
    pub state_serial: Option<u64>,
    /// What refresh found for every address in the state (`None`: gone).
    pub refreshed: BTreeMap<Address, Option<Live>>,
    pub changes: Vec<Change>,
    pub drift: Vec<crate::drift::Finding>,
}

/// Counts for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
}

impl Plan {
    /// Terraform's arithmetic: a replace is one add and one destroy.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.changes {
            match c.action {
                Action::NoOp => {}
                Action::Create => s.add += 1,
                Action::Update => s.change += 1,
                Action::Replace => {
                    s.add += 1;
                    s.destroy += 1;
                }
                Action::Delete => s.destroy += 1,
            }
        }
        s
    }

    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.action != Action::NoOp)
    }

    /// Changes that would delete or replace something protected.
    pub fn protected_losses(&self) -> Vec<&Change> {
        self.changes
            .iter()
            .filter(|c| c.protected && matches!(c.action, Action::Delete | Action::Replace))
            .collect()
    }
}
