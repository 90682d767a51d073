//! Executes a plan. The generator (the planner) decided what to do; this
//! does it, honouring dependencies (deletes in reverse), bounded parallelism
//! and serial groups, skipping the dependents of a failure while independent
//! work continues, and stopping cleanly when cancelled.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt};
use serde_json::Value;
use tokio::sync::Notify;

use crate::addr::Address;
use crate::plan::{Action, Change, Plan};
use crate::provider::{OpContext, ProviderError, Providers};
use crate::resource::{Attrs, Expr, Live, spec_opt};
use crate::state::{ResourceState, State, StateError};

/// What is being done to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Create,
    Update,
    Delete,
    /// The delete half of a replacement.
    ReplaceDelete,
    /// The create half of a replacement.
    ReplaceCreate,
}

impl Op {
    pub fn verb(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::ReplaceDelete => "delete (replace)",
            Op::ReplaceCreate => "create (replace)",
        }
    }
}

/// Receives the executor's events (progress bars, log lines).
pub trait Hooks: Send + Sync {
    fn started(&self, addr: &Address, op: Op);
    fn status(&self, addr: &Address, op: Op, message: &str);
    fn finished(&self, addr: &Address, op: Op, error: Option<&str>, elapsed: Duration);
    fn skipped(&self, addr: &Address, op: Op, because: &Address);
}

/// Where the executor records finished resources. Implementations write
/// the state file atomically on every call, once for all of its records:
/// resources that finish together are saved together (a group commit).
pub trait StateSink {
    /// Sets every record, then saves once; on error none of them is kept.
    fn record_all(
        &mut self,
        records: &[(Address, Option<ResourceState>)],
    ) -> Result<(), StateError>;
    fn record(
        &mut self,
        addr: &Address,
        resource: Option<ResourceState>,
    ) -> Result<(), StateError> {
        self.record_all(&[(addr.clone(), resource)])
    }
    /// The state as saved so far.
    fn state(&self) -> &State;
    /// The attributes the state holds for `addr` now.
    fn attrs_opt(&self, addr: &Address) -> Option<Attrs> {
        self.state().get_opt(addr).map(|r| r.attributes.clone())
    }
    fn live_opt(&self, addr: &Address) -> Option<Live> {
        self.state().get_opt(addr).map(ResourceState::live)
    }
    /// Everything the state holds for `addr`.
    fn resource_opt(&self, addr: &Address) -> Option<ResourceState> {
        self.state().get_opt(addr).cloned()
    }
}

/// Where the object being replaced is kept in the state while its
/// replacement exists alongside it (`aws.security_group.x.deposed`); a run
/// that stops in between leaves it there, and the next plan deletes it.
pub fn deposed(addr: &Address) -> Result<Address, crate::addr::AddressError> {
    Address::new(
        addr.domain(),
        addr.kind(),
        &format!("{}.deposed", addr.name()),
    )
}

/// A cancellation flag shared with signal handlers: once set, no new work starts.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
    /// Set by a second interruption: stop waiting for calls in flight.
    abandon: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Stops waiting for operations in flight too (EKS can take a quarter
    /// of an hour): they are reported as abandoned.
    pub fn abandon(&self) {
        self.abandon.store(true, Ordering::SeqCst);
        self.cancel();
    }

    pub fn is_abandoned(&self) -> bool {
        self.abandon.load(Ordering::SeqCst)
    }

    async fn abandoned(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_abandoned() {
                return;
            }
            notified.await;
        }
    }

    async fn cancelled(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// One failed resource.
#[derive(Debug, Clone)]
pub struct Failure {
    pub addr: Address,
    pub op: Op,
    pub error: String,
    pub retryable: bool,
}

/// What happened.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub done: Vec<(Address, Op)>,
    pub failed: Vec<Failure>,
    /// Not attempted because something they depend on failed.
    pub skipped: Vec<(Address, Op, Address)>,
    /// Not started because the run was interrupted or the state could not be written.
    pub not_started: Vec<(Address, Op)>,
    /// In flight when a second interruption abandoned them: their outcome
    /// is unknown until the next plan reads the cloud.
    pub abandoned: Vec<(Address, Op)>,
    /// What operations warned about while succeeding.
    pub warnings: Vec<(Address, String)>,
    pub interrupted: bool,
    pub state_error: Option<StateError>,
}

impl ApplyReport {
    pub fn success(&self) -> bool {
        self.failed.is_empty()
            && self.skipped.is_empty()
            && self.not_started.is_empty()
            && self.abandoned.is_empty()
            && !self.interrupted
            && self.state_error.is_none()
    }
}

#[derive(Debug)]
struct Node {
    addr: Address,
    op: Op,
    change: usize,
    deps: BTreeSet<usize>,
    /// Half of a replacement made before the old object goes.
    cbd: bool,
}

/// Runs plans.
pub struct Executor<'a> {
    pub providers: &'a Providers,
    pub parallelism: usize,
    pub hooks: &'a dyn Hooks,
    pub cancel: Cancel,
    /// `--allow-protected`: deletes may take data with them.
    pub allow_data_loss: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum NodeState {
    Waiting,
    Running,
    Done,
    Failed,
    Skipped,
}

impl Executor<'_> {
    /// Applies every change of `plan`, recording results in `sink`.
    pub async fn apply(&self, plan: &Plan, sink: &mut dyn StateSink) -> ApplyReport {
        let warnings = std::sync::Mutex::new(Vec::new());
        let mut report = self.apply_warning(plan, sink, &warnings).await;
        report.warnings = warnings.into_inner().unwrap_or_default();
        report
    }

    async fn apply_warning(
        &self,
        plan: &Plan,
        sink: &mut dyn StateSink,
        warnings: &std::sync::Mutex<Vec<(Address, String)>>,
    ) -> ApplyReport {
        let nodes = build_nodes(&plan.changes);
        let order = start_order(&nodes, |n| {
            let deleting = matches!(n.op, Op::Delete | Op::ReplaceDelete);
            self.providers
                .for_addr(&n.addr)
                .map_or(Duration::from_secs(1), |p| {
                    p.expected_duration(&n.addr, deleting)
                })
        });
        let mut report = ApplyReport::default();
        let mut states = vec![NodeState::Waiting; nodes.len()];
        let mut busy_groups: BTreeSet<String> = BTreeSet::new();
        let mut running = FuturesUnordered::new();
        let parallelism = self.parallelism.max(1);
        let mut stopping = false;

        loop {
            if !stopping && (self.cancel.is_cancelled() || report.state_error.is_some()) {
                stopping = true;
                report.interrupted = self.cancel.is_cancelled();
            }
            if !stopping {
                for &i in &order {
                    if running.len() >= parallelism {
                        break;
                    }
                    if states[i] != NodeState::Waiting
                        || !nodes[i].deps.iter().all(|d| states[*d] == NodeState::Done)
                    {
                        continue;
                    }
                    let change = &plan.changes[nodes[i].change];
                    if let Some(group) = &change.serial_group {
                        if busy_groups.contains(group) {
                            continue;
                        }
                        busy_groups.insert(group.clone());
                    }
                    states[i] = NodeState::Running;
                    self.hooks.started(&nodes[i].addr, nodes[i].op);
                    // The object being replaced steps aside in the state
                    // first, so it is never lost track of.
                    if nodes[i].cbd
                        && nodes[i].op == Op::ReplaceCreate
                        && let Err(e) = depose(&nodes[i].addr, sink)
                    {
                        states[i] = NodeState::Failed;
                        self.hooks.finished(
                            &nodes[i].addr,
                            nodes[i].op,
                            Some(&e.to_string()),
                            Duration::ZERO,
                        );
                        report.failed.push(Failure {
                            addr: nodes[i].addr.clone(),
                            op: nodes[i].op,
                            error: e.to_string(),
                            retryable: false,
                        });
                        report.state_error = Some(e);
                        break;
                    }
                    let prepared = prepare(&nodes[i], change, sink);
                    let before = change.before.as_ref().map(|l| l.id.clone());
                    running.push(self.run(i, &nodes[i], prepared, before, warnings));
                }
            }
            if running.is_empty() {
                break;
            }
            let finished = tokio::select! {
                f = running.next() => f,
                _ = self.cancel.cancelled(), if !stopping => continue,
                _ = self.cancel.abandoned() => {
                    report.interrupted = true;
                    break;
                }
            };
            let Some(first) = finished else {
                break;
            };
            // Whatever else has finished meanwhile is saved with it.
            let mut batch = vec![first];
            while let Some(Some(more)) = running.next().now_or_never() {
                batch.push(more);
            }
            let mut records = Vec::new();
            for (i, _, result) in &batch {
                let node = &nodes[*i];
                let change = &plan.changes[node.change];
                if let Some(group) = &change.serial_group {
                    busy_groups.remove(group);
                }
                let Ok(live) = result else { continue };
                let record = match (node.op, live) {
                    (Op::Delete | Op::ReplaceDelete, _) => None,
                    (_, Some(live)) => Some(ResourceState {
                        id: live.id.clone(),
                        attributes: live.attrs.clone(),
                        depends_on: change.depends_on.clone(),
                        env: change.env.clone(),
                        serial_group: change.serial_group.clone(),
                        protected: change.protected,
                    }),
                    (_, None) => None,
                };
                // The old half of a replacement made first was set aside.
                let at = match (node.cbd, node.op) {
                    (true, Op::ReplaceDelete) => deposed(&node.addr).unwrap_or(node.addr.clone()),
                    _ => node.addr.clone(),
                };
                records.push((at, record));
            }
            let saved = match records.is_empty() {
                true => Ok(()),
                false => sink.record_all(&records),
            };
            let unsaved = saved.as_ref().err().map(ToString::to_string);
            if let Err(e) = saved {
                report.state_error = Some(e);
            }
            for (i, started, result) in batch {
                let node = &nodes[i];
                let elapsed = started.elapsed();
                match (result, &unsaved) {
                    (Ok(_), Some(msg)) => {
                        // The cloud changed but the state could not say so:
                        // stop everything, and report it as this resource's
                        // failure too.
                        self.hooks.finished(&node.addr, node.op, Some(msg), elapsed);
                        states[i] = NodeState::Failed;
                        report.failed.push(Failure {
                            addr: node.addr.clone(),
                            op: node.op,
                            error: msg.clone(),
                            retryable: false,
                        });
                    }
                    (Ok(_), None) => {
                        // A provider connected through this object follows it.
                        self.providers
                            .observed(&node.addr, sink.live_opt(&node.addr).as_ref());
                        states[i] = NodeState::Done;
                        self.hooks.finished(&node.addr, node.op, None, elapsed);
                        report.done.push((node.addr.clone(), node.op));
                    }
                    (Err(e), _) => {
                        states[i] = NodeState::Failed;
                        let msg = e.to_string();
                        self.hooks
                            .finished(&node.addr, node.op, Some(&msg), elapsed);
                        report.failed.push(Failure {
                            addr: node.addr.clone(),
                            op: node.op,
                            error: msg,
                            retryable: e.retryable,
                        });
                        skip_dependents(&nodes, &mut states, i, self.hooks, &mut report);
                    }
                }
            }
        }
        drop(running);
        for (i, s) in states.iter().enumerate() {
            match s {
                NodeState::Waiting => report
                    .not_started
                    .push((nodes[i].addr.clone(), nodes[i].op)),
                NodeState::Running => report.abandoned.push((nodes[i].addr.clone(), nodes[i].op)),
                _ => {}
            }
        }
        report
    }

    async fn run(
        &self,
        i: usize,
        node: &Node,
        prepared: Result<Prepared, ProviderError>,
        change_before: Option<String>,
        warnings: &std::sync::Mutex<Vec<(Address, String)>>,
    ) -> (usize, Instant, Result<Option<Live>, ProviderError>) {
        let started = Instant::now();
        let result = async {
            let prepared = prepared?;
            let provider = self.providers.for_addr(&node.addr)?;
            let status = |m: &str| self.hooks.status(&node.addr, node.op, m);
            let replacing = match (node.cbd, node.op, &change_before) {
                (true, Op::ReplaceCreate, Some(id)) => Some(id.as_str()),
                _ => None,
            };
            let warn = |m: &str| {
                if let Ok(mut w) = warnings.lock() {
                    w.push((node.addr.clone(), m.to_string()));
                }
            };
            let ctx = OpContext::new(&status)
                .allowing_data_loss(self.allow_data_loss)
                .replacing(replacing)
                .warning_to(&warn);
            match (node.op, prepared) {
                (Op::Create | Op::ReplaceCreate, Prepared::Desired(attrs)) => {
                    provider.create(&node.addr, &attrs, &ctx).await.map(Some)
                }
                (Op::Update, Prepared::Update(prior, attrs)) => provider
                    .update(&node.addr, &prior, &attrs, &ctx)
                    .await
                    .map(Some),
                (Op::Delete | Op::ReplaceDelete, Prepared::Prior(prior)) => provider
                    .delete(&node.addr, &prior, &ctx)
                    .await
                    .map(|_| None),
                (Op::Delete | Op::ReplaceDelete, Prepared::Gone) => Ok(None),
                _ => Err(ProviderError::new(
                    &node.addr,
                    "Internal",
                    "the executor prepared the wrong inputs for this operation",
                    false,
                )),
            }
        }
        .await;
        (i, started, result)
    }
}

enum Prepared {
    Desired(Attrs),
    Update(Live, Attrs),
    Prior(Live),
    Gone,
}

/// Resolves the planned attributes against the state as it is now (every
/// dependency has finished, so every reference is known).
/// Moves the record of `addr` to its deposed address.
fn depose(addr: &Address, sink: &mut dyn StateSink) -> Result<(), StateError> {
    let Some(old) = sink.resource_opt(addr) else {
        return Ok(());
    };
    let Ok(at) = deposed(addr) else {
        return Ok(());
    };
    sink.record(&at, Some(old))
}

fn prepare(node: &Node, change: &Change, sink: &dyn StateSink) -> Result<Prepared, ProviderError> {
    let recorded = |addr: &Address| match (node.cbd, deposed(addr)) {
        (true, Ok(d)) => sink.live_opt(&d),
        _ => sink.live_opt(addr),
    };
    match node.op {
        Op::Delete | Op::ReplaceDelete => Ok(
            match recorded(&node.addr).or_else(|| change.before.clone()) {
                Some(live) => Prepared::Prior(live),
                None => Prepared::Gone,
            },
        ),
        Op::Create | Op::ReplaceCreate | Op::Update => {
            let outputs = spec_opt(&node.addr.kind_key())
                .map(|s| s.outputs)
                .unwrap_or_default();
            let lookup = |r: &crate::resource::Reference| -> Option<Value> {
                sink.attrs_opt(&r.addr)
                    .and_then(|a| a.get(&r.attr).cloned())
            };
            let mut attrs = Attrs::new();
            for (k, e) in change.after.iter().flatten() {
                if outputs.contains(&k.as_str()) {
                    continue;
                }
                let v = Expr::resolve(e, &lookup).map_err(|err| {
                    ProviderError::new(
                        &node.addr,
                        "UnresolvedReference",
                        format!("attribute `{k}`: {err}"),
                        false,
                    )
                })?;
                attrs.insert(k.clone(), v);
            }
            if node.op == Op::Update {
                let prior = sink
                    .live_opt(&node.addr)
                    .or_else(|| change.before.clone())
                    .ok_or_else(|| {
                        ProviderError::new(
                            &node.addr,
                            "NotFound",
                            "the state no longer has this resource; run plan again",
                            false,
                        )
                    })?;
                Ok(Prepared::Update(prior, attrs))
            } else {
                Ok(Prepared::Desired(attrs))
            }
        }
    }
}

fn skip_dependents(
    nodes: &[Node],
    states: &mut [NodeState],
    failed: usize,
    hooks: &dyn Hooks,
    report: &mut ApplyReport,
) {
    let mut todo = vec![failed];
    while let Some(f) = todo.pop() {
        for (i, n) in nodes.iter().enumerate() {
            if states[i] == NodeState::Waiting && n.deps.contains(&f) {
                states[i] = NodeState::Skipped;
                hooks.skipped(&n.addr, n.op, &nodes[failed].addr);
                report
                    .skipped
                    .push((n.addr.clone(), n.op, nodes[failed].addr.clone()));
                todo.push(i);
            }
        }
    }
}

/// Operations of `changes` that no order can satisfy (a cycle between what
/// must happen first), or `None` when every one can run in turn.
pub fn unorderable(changes: &[Change]) -> Option<Vec<(Address, Op)>> {
    let nodes = build_nodes(changes);
    let mut done = vec![false; nodes.len()];
    loop {
        let ready: Vec<usize> = (0..nodes.len())
            .filter(|i| !done[*i] && nodes[*i].deps.iter().all(|d| done[*d]))
            .collect();
        if ready.is_empty() {
            break;
        }
        for i in ready {
            done[i] = true;
        }
    }
    let stuck: Vec<(Address, Op)> = nodes
        .iter()
        .zip(&done)
        .filter(|(_, d)| !**d)
        .map(|(n, _)| (n.addr.clone(), n.op))
        .collect();
    (!stuck.is_empty()).then_some(stuck)
}

/// The order in which ready operations start: the one heading the longest
/// chain of expected work first (critical-path scheduling), so that neither
/// the parallelism bound nor a serial group (EKS's one Fargate profile at a
/// time) holds up the run's longest chain behind shorter ones.
fn start_order(nodes: &[Node], expected: impl Fn(&Node) -> Duration) -> Vec<usize> {
    let mut dependents = vec![Vec::new(); nodes.len()];
    let mut unmet: Vec<usize> = nodes.iter().map(|n| n.deps.len()).collect();
    for (i, n) in nodes.iter().enumerate() {
        for &d in &n.deps {
            dependents[d].push(i);
        }
    }
    // Prerequisites before dependents (Kahn), then walked backwards.
    let mut topo: Vec<usize> = (0..nodes.len()).filter(|&i| unmet[i] == 0).collect();
    let mut next = 0;
    while let Some(&i) = topo.get(next) {
        next += 1;
        for &j in &dependents[i] {
            unmet[j] -= 1;
            if unmet[j] == 0 {
                topo.push(j);
            }
        }
    }
    let mut chain = vec![Duration::ZERO; nodes.len()];
    for &i in topo.iter().rev() {
        let after = dependents[i].iter().map(|&j| chain[j]).max();
        chain[i] = expected(&nodes[i]) + after.unwrap_or_default();
    }
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(chain[i]), i));
    order
}

/// Turns changes into operations with ordering edges:
/// creates and updates after those of their dependencies; deletes after the
/// deletes of their dependents; a replacement deletes before it creates.
fn build_nodes(changes: &[Change]) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut upsert: HashMap<&Address, usize> = HashMap::new();
    let mut delete: HashMap<&Address, usize> = HashMap::new();
    for (ci, c) in changes.iter().enumerate() {
        let mut push = |op| {
            nodes.push(Node {
                addr: c.addr.clone(),
                op,
                change: ci,
                deps: BTreeSet::new(),
                cbd: c.create_before_destroy,
            });
            nodes.len() - 1
        };
        match c.action {
            Action::NoOp => {}
            Action::Create => {
                upsert.insert(&c.addr, push(Op::Create));
            }
            Action::Update => {
                upsert.insert(&c.addr, push(Op::Update));
            }
            Action::Delete => {
                delete.insert(&c.addr, push(Op::Delete));
            }
            Action::Replace => {
                let d = push(Op::ReplaceDelete);
                let u = push(Op::ReplaceCreate);
                delete.insert(&c.addr, d);
                upsert.insert(&c.addr, u);
            }
        }
    }
    let mut edges: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for c in changes {
        if let Some(&u) = upsert.get(&c.addr) {
            for dep in &c.depends_on {
                if let Some(&du) = upsert.get(dep) {
                    edges.entry(u).or_default().insert(du);
                }
            }
            if let Some(&d) = delete.get(&c.addr) {
                if c.create_before_destroy {
                    // The old one goes after the new one exists and what
                    // used it has moved over.
                    edges.entry(d).or_default().insert(u);
                    for user in changes
                        .iter()
                        .filter(|x| x.action == Action::Update && x.depends_on.contains(&c.addr))
                    {
                        if let Some(&uu) = upsert.get(&user.addr) {
                            edges.entry(d).or_default().insert(uu);
                        }
                    }
                } else {
                    edges.entry(u).or_default().insert(d);
                }
            }
        }
        // A resource being deleted must go before what it depends on is
        // deleted: what it was created on (the state's record), as well as
        // what the stack says now.
        if let Some(&d) = delete.get(&c.addr) {
            for dep in c.depends_on.iter().chain(&c.prior_depends_on) {
                if let Some(&dd) = delete.get(dep) {
                    edges.entry(dd).or_default().insert(d);
                }
            }
        }
        // An object removed from the stack goes only once what used it has
        // moved off it (an instance updated onto another security group).
        if c.action == Action::Update
            && let Some(&u) = upsert.get(&c.addr)
        {
            for dep in c.prior_depends_on.difference(&c.depends_on) {
                if let Some(&dd) = delete.get(dep)
                    && nodes[dd].op == Op::Delete
                {
                    edges.entry(dd).or_default().insert(u);
                }
            }
        }
    }
    // An object set aside by a replacement that stopped halfway goes only
    // after what used it has moved over to its replacement.
    for c in changes.iter().filter(|c| c.action == Action::Delete) {
        let Some(base) = c
            .addr
            .name()
            .strip_suffix(".deposed")
            .and_then(|n| Address::new(c.addr.domain(), c.addr.kind(), n).ok())
        else {
            continue;
        };
        let Some(&d) = delete.get(&c.addr) else {
            continue;
        };
        for user in changes.iter().filter(|x| {
            x.action == Action::Update
                && (x.depends_on.contains(&base) || x.prior_depends_on.contains(&base))
        }) {
            if let Some(&u) = upsert.get(&user.addr) {
                edges.entry(d).or_default().insert(u);
            }
        }
    }
    for (n, deps) in edges {
        nodes[n].deps = deps;
    }
    nodes
}

#[cfg(test)]
mod tests;
