//! The executor: walks a plan concurrently in dependency order, calls the
//! providers, and persists the state after every resource.

mod executor;

pub use executor::{
    ApplyReport, Cancel, Executor, Failure, Hooks, Op, StateSink, deposed, unorderable,
};

use crate::addr::Address;
use crate::resource::{Attrs, Live};
use crate::state::{Backend, ResourceState, State, StateError};

/// An in-memory state (tests, dry runs).
impl StateSink for State {
    fn record(
        &mut self,
        addr: &Address,
        resource: Option<ResourceState>,
    ) -> Result<(), StateError> {
        self.set(addr, resource);
        Ok(())
    }

    fn attrs_opt(&self, addr: &Address) -> Option<Attrs> {
        self.get_opt(addr).map(|r| r.attributes.clone())
    }

    fn live_opt(&self, addr: &Address) -> Option<Live> {
        self.get_opt(addr).map(ResourceState::live)
    }

    fn resource_opt(&self, addr: &Address) -> Option<ResourceState> {
        self.get_opt(addr).cloned()
    }
}

/// A state written to its backend after every resource.
pub struct PersistingSink<'a> {
    pub backend: &'a Backend,
    pub state: &'a mut State,
}

impl StateSink for PersistingSink<'_> {
    fn record(
        &mut self,
        addr: &Address,
        resource: Option<ResourceState>,
    ) -> Result<(), StateError> {
        let previous = self.state.get_opt(addr).cloned();
        self.state.set(addr, resource);
        if let Err(e) = self.backend.write(self.state) {
            // Keep memory equal to the disk so a later write does not claim
            // something the file never said.
            self.state.set(addr, previous);
            return Err(e);
        }
        Ok(())
    }

    fn attrs_opt(&self, addr: &Address) -> Option<Attrs> {
        self.state.attrs_opt(addr)
    }

    fn live_opt(&self, addr: &Address) -> Option<Live> {
        self.state.live_opt(addr)
    }

    fn resource_opt(&self, addr: &Address) -> Option<ResourceState> {
        self.state.resource_opt(addr)
    }
}
