//! The executor: walks a plan concurrently in dependency order, calls the
//! providers, and persists the state whenever resources finish.

mod executor;

pub use executor::{
    ApplyReport, Cancel, Executor, Failure, Hooks, Op, StateSink, deposed, unorderable,
};

use crate::addr::Address;
use crate::state::{Backend, ResourceState, State, StateError};

/// An in-memory state (tests, dry runs).
impl StateSink for State {
    fn record_all(
        &mut self,
        records: &[(Address, Option<ResourceState>)],
    ) -> Result<(), StateError> {
        for (addr, resource) in records {
            self.set(addr, resource.clone());
        }
        Ok(())
    }

    fn state(&self) -> &State {
        self
    }
}

/// A state written to its backend every time resources finish: those that
/// finish together are written together.
pub struct PersistingSink<'a> {
    pub backend: &'a Backend,
    pub state: &'a mut State,
}

impl StateSink for PersistingSink<'_> {
    fn record_all(
        &mut self,
        records: &[(Address, Option<ResourceState>)],
    ) -> Result<(), StateError> {
        let mut previous = Vec::with_capacity(records.len());
        for (addr, resource) in records {
            previous.push((addr, self.state.get_opt(addr).cloned()));
            self.state.set(addr, resource.clone());
        }
        if let Err(e) = self.backend.write(self.state) {
            // Keep memory equal to the disk so a later write does not claim
            // something the file never said (in reverse, should one address
            // appear twice).
            for (addr, resource) in previous.into_iter().rev() {
                self.state.set(addr, resource);
            }
            return Err(e);
        }
        Ok(())
    }

    fn state(&self) -> &State {
        self.state
    }
}
