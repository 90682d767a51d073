use std::sync::Mutex;

use serde_json::json;

use super::*;
use crate::plan::{Mode, PlanInput, StackRef, plan as make_plan};
use crate::provider::fake::FakeProvider;
use crate::resource::{Desired, Resource};
use crate::state::State;

fn a(s: &str) -> Address {
    s.parse().unwrap()
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
    running: Mutex<(usize, usize)>,
}

impl Hooks for Recorder {
    fn started(&self, addr: &Address, op: Op) {
        self.events
            .lock()
            .unwrap()
            .push(format!("start {} {addr}", op.verb()));
        let mut r = self.running.lock().unwrap();
        r.0 += 1;
        r.1 = r.1.max(r.0);
    }
    fn status(&self, _: &Address, _: Op, _: &str) {}
    fn finished(&self, addr: &Address, op: Op, error: Option<&str>, _: Duration) {
        self.events.lock().unwrap().push(format!(
            "{} {} {addr}",
            if error.is_some() { "fail" } else { "done" },
            op.verb()
        ));
        self.running.lock().unwrap().0 -= 1;
    }
    fn skipped(&self, addr: &Address, op: Op, because: &Address) {
        self.events
            .lock()
            .unwrap()
            .push(format!("skip {} {addr} because {because}", op.verb()));
    }
}

impl Recorder {
    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
    fn index(&self, event: &str) -> usize {
        self.events()
            .iter()
            .position(|e| e == event)
            .unwrap_or_else(|| panic!("no `{event}` in {:?}", self.events()))
    }
    fn max_running(&self) -> usize {
        self.running.lock().unwrap().1
    }
}

/// vpc <- subnet_{1..n} <- association_i ; igw <- vpc
fn network(cidr: &str, subnets: usize) -> Desired {
    let vpc = a("aws.vpc.main");
    let mut rs = vec![
        Resource::new(vpc.clone()).attr("cidr_block", cidr),
        Resource::new(a("aws.internet_gateway.main")).attr("vpc_id", Expr::reference(&vpc, "id")),
        Resource::new(a("aws.route_table.public")).attr("vpc_id", Expr::reference(&vpc, "id")),
    ];
    for i in 0..subnets {
        let subnet = a(&format!("aws.subnet.s{i}"));
        rs.push(
            Resource::new(subnet.clone())
                .attr("vpc_id", Expr::reference(&vpc, "id"))
                .attr("cidr_block", format!("10.0.{i}.0/24")),
        );
        rs.push(
            Resource::new(a(&format!("aws.route_table_association.s{i}")))
                .attr("subnet_id", Expr::reference(&subnet, "id"))
                .attr(
                    "route_table_id",
                    Expr::reference(&a("aws.route_table.public"), "id"),
                ),
        );
    }
    Desired::new(rs).unwrap()
}

fn plan_for(
    desired: &Desired,
    state: &State,
    live: &BTreeMap<Address, Option<Live>>,
    mode: Mode,
) -> Plan {
    let (changes, drift) = make_plan(&PlanInput {
        desired,
        prior: state.resources(),
        live,
        discovered: &crate::provider::Discovery::default(),
        mode: &mode,
    })
    .unwrap();
    Plan {
        format_version: 1,
        id: "p".into(),
        created_at: String::new(),
        slipway_version: String::new(),
        stack: StackRef {
            name: "s".into(),
            path: String::new(),
            sha256: String::new(),
        },
        mode,
        state_lineage: None,
        state_serial: None,
        refreshed: live.clone(),
        changes,
        drift,
    }
}

async fn refresh(fake: &FakeProvider, state: &State) -> BTreeMap<Address, Option<Live>> {
    let mut out = BTreeMap::new();
    for (addr, r) in state.resources() {
        out.insert(
            addr.clone(),
            crate::provider::Provider::read(fake, addr, &r.live())
                .await
                .unwrap(),
        );
    }
    out
}

fn providers(fake: &FakeProvider) -> Providers {
    let p: Arc<dyn crate::provider::Provider> = Arc::new(fake.clone());
    Providers::new().with("", p)
}

async fn apply(
    fake: &FakeProvider,
    plan: &Plan,
    state: &mut State,
    parallelism: usize,
    hooks: &Recorder,
    cancel: Cancel,
) -> ApplyReport {
    let p = providers(fake);
    let ex = Executor {
        providers: &p,
        parallelism,
        hooks,
        cancel,
        allow_data_loss: false,
    };
    ex.apply(plan, state).await
}

#[tokio::test]
async fn applies_from_empty_in_dependency_order_then_nothing_to_do() {
    let fake = FakeProvider::in_memory("s");
    let desired = network("10.0.0.0/16", 3);
    let mut state = State::new("s");
    let plan = plan_for(&desired, &state, &BTreeMap::new(), Mode::Apply);
    let hooks = Recorder::default();
    let report = apply(&fake, &plan, &mut state, 10, &hooks, Cancel::new()).await;
    assert!(report.success(), "{report:?}");
    assert_eq!(state.resources().len(), 9);
    assert!(hooks.index("done create aws.vpc.main") < hooks.index("start create aws.subnet.s0"));
    assert!(
        hooks.index("done create aws.subnet.s2")
            < hooks.index("start create aws.route_table_association.s2")
    );
    // References were resolved from the state as it filled.
    let vpc_id = state.get_opt(&a("aws.vpc.main")).unwrap().id.clone();
    assert_eq!(
        state.get_opt(&a("aws.subnet.s1")).unwrap().attributes["vpc_id"],
        json!(vpc_id)
    );

    let live = refresh(&fake, &state).await;
    let again = plan_for(&desired, &state, &live, Mode::Apply);
    assert!(
        !again.has_changes(),
        "{:?}",
        again
            .changes
            .iter()
            .filter(|c| c.action != Action::NoOp)
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn update_changes_in_place() {
    let fake = FakeProvider::in_memory("s");
    let mut state = State::new("s");
    let d1 = Desired::new(vec![
        Resource::new(a("aws.vpc.main"))
            .attr("cidr_block", "10.0.0.0/16")
            .attr("tags", json!({"team": "a"})),
    ])
    .unwrap();
    let hooks = Recorder::default();
    apply(
        &fake,
        &plan_for(&d1, &state, &BTreeMap::new(), Mode::Apply),
        &mut state,
        4,
        &hooks,
        Cancel::new(),
    )
    .await;
    let id = state.get_opt(&a("aws.vpc.main")).unwrap().id.clone();
    let d2 = Desired::new(vec![
        Resource::new(a("aws.vpc.main"))
            .attr("cidr_block", "10.0.0.0/16")
            .attr("tags", json!({"team": "b"})),
    ])
    .unwrap();
    let live = refresh(&fake, &state).await;
    let plan = plan_for(&d2, &state, &live, Mode::Apply);
    assert_eq!(plan.changes[0].action, Action::Update);
    let report = apply(&fake, &plan, &mut state, 4, &hooks, Cancel::new()).await;
    assert!(report.success());
    let r = state.get_opt(&a("aws.vpc.main")).unwrap();
    assert_eq!(r.id, id);
    assert_eq!(r.attributes["tags"], json!({"team": "b"}));
}

#[tokio::test]
async fn replace_deletes_dependents_first_then_recreates_in_order() {
    let fake = FakeProvider::in_memory("s");
    let mut state = State::new("s");
    let hooks = Recorder::default();
    apply(
        &fake,
        &plan_for(
            &network("10.0.0.0/16", 1),
            &state,
            &BTreeMap::new(),
            Mode::Apply,
        ),
        &mut state,
        10,
        &hooks,
        Cancel::new(),
    )
    .await;
    let old_vpc = state.get_opt(&a("aws.vpc.main")).unwrap().id.clone();

    let live = refresh(&fake, &state).await;
    let plan = plan_for(&network("10.1.0.0/16", 1), &state, &live, Mode::Apply);
    let hooks = Recorder::default();
    let report = apply(&fake, &plan, &mut state, 10, &hooks, Cancel::new()).await;
    assert!(report.success(), "{report:?}");
    // The subnet depends on the VPC: it goes first and comes back last.
    assert!(
        hooks.index("done delete (replace) aws.subnet.s0")
            < hooks.index("start delete (replace) aws.vpc.main")
    );
    assert!(
        hooks.index("done delete (replace) aws.vpc.main")
            < hooks.index("start create (replace) aws.vpc.main")
    );
    assert!(
        hooks.index("done create (replace) aws.vpc.main")
            < hooks.index("start create (replace) aws.subnet.s0")
    );
    let new_vpc = state.get_opt(&a("aws.vpc.main")).unwrap().id.clone();
    assert_ne!(old_vpc, new_vpc);
    assert_eq!(
        state.get_opt(&a("aws.subnet.s0")).unwrap().attributes["vpc_id"],
        json!(new_vpc)
    );
    assert_eq!(fake.world().objects.len(), 5);
}

#[tokio::test]
async fn a_failure_skips_its_dependents_and_independent_work_continues() {
    let fake = FakeProvider::in_memory("s");
    fake.edit(|w| {
        w.faults.fail.insert(
            "create:aws.subnet.s0".into(),
            "InsufficientFreeAddresses".into(),
        );
    });
    let mut state = State::new("s");
    let hooks = Recorder::default();
    let plan = plan_for(
        &network("10.0.0.0/16", 2),
        &state,
        &BTreeMap::new(),
        Mode::Apply,
    );
    let report = apply(&fake, &plan, &mut state, 1, &hooks, Cancel::new()).await;
    assert!(!report.success());
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].addr, a("aws.subnet.s0"));
    assert!(report.failed[0].error.contains("InjectedFault"));
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].0, a("aws.route_table_association.s0"));
    assert!(
        state
            .get_opt(&a("aws.route_table_association.s1"))
            .is_some(),
        "independent work must finish"
    );
    assert_eq!(state.resources().len(), 5);
}

#[tokio::test]
async fn parallelism_is_bounded_and_serial_groups_run_one_at_a_time() {
    let fake = FakeProvider::in_memory("s");
    fake.edit(|w| w.faults.delay_ms = 20);
    let mut rs = Vec::new();
    for i in 0..8 {
        rs.push(Resource::new(a(&format!("aws.vpc.v{i}"))).attr("cidr_block", "10.0.0.0/16"));
    }
    for i in 0..3 {
        rs.push(
            Resource::new(a(&format!("aws.eks_fargate_profile.p{i}")))
                .attr("name", format!("p{i}"))
                .serial_group("eks:c"),
        );
    }
    let desired = Desired::new(rs).unwrap();
    let mut state = State::new("s");
    let hooks = Recorder::default();
    let plan = plan_for(&desired, &state, &BTreeMap::new(), Mode::Apply);
    let report = apply(&fake, &plan, &mut state, 3, &hooks, Cancel::new()).await;
    assert!(report.success());
    assert_eq!(hooks.max_running(), 3);
    let one_profile_at_a_time = |hooks: &Recorder| {
        let mut in_flight = 0;
        for e in hooks.events() {
            if e.contains("eks_fargate_profile") {
                if e.starts_with("start") {
                    in_flight += 1;
                    assert_eq!(in_flight, 1, "{:?}", hooks.events());
                } else {
                    in_flight -= 1;
                }
            }
        }
    };
    one_profile_at_a_time(&hooks);

    // Deletes too: the state remembers each profile's group.
    for i in 0..3 {
        let profile = state
            .get_opt(&a(&format!("aws.eks_fargate_profile.p{i}")))
            .unwrap();
        assert_eq!(profile.serial_group.as_deref(), Some("eks:c"));
    }
    // A state written before groups were kept gets them from the stack.
    let forgetful: Vec<_> = state
        .resources()
        .iter()
        .map(|(a, r)| {
            let mut r = r.clone();
            r.serial_group = None;
            (a.clone(), r)
        })
        .collect();
    for (a, r) in forgetful {
        state.set(&a, Some(r));
    }
    let live = refresh(&fake, &state).await;
    let plan = plan_for(&desired, &state, &live, Mode::Destroy { env: None });
    let hooks = Recorder::default();
    let report = apply(&fake, &plan, &mut state, 3, &hooks, Cancel::new()).await;
    assert!(report.success());
    assert!(state.resources().is_empty());
    one_profile_at_a_time(&hooks);
}

#[tokio::test]
async fn of_the_ready_operations_the_head_of_the_longest_chain_starts_first() {
    // Two Fargate profiles of one cluster, one at a time: the one a chain
    // of three waits on goes first, though it sorts last.
    let mut rs = vec![
        Resource::new(a("aws.eks_fargate_profile.a_env"))
            .attr("name", "a")
            .serial_group("eks:c"),
        Resource::new(a("aws.eks_fargate_profile.z_system"))
            .attr("name", "z")
            .serial_group("eks:c"),
        // With one operation at a time, a root nothing waits on goes after
        // the root of a chain.
        Resource::new(a("aws.vpc.a_alone")).attr("cidr_block", "10.0.0.0/16"),
    ];
    let mut before = a("aws.eks_fargate_profile.z_system");
    for i in 0..3 {
        let next = a(&format!("aws.vpc.after{i}"));
        rs.push(Resource::new(next.clone()).attr("cidr_block", Expr::reference(&before, "id")));
        before = next;
    }
    let desired = Desired::new(rs).unwrap();
    let fake = FakeProvider::in_memory("s");
    let mut state = State::new("s");
    let hooks = Recorder::default();
    let plan = plan_for(&desired, &state, &BTreeMap::new(), Mode::Apply);
    let report = apply(&fake, &plan, &mut state, 1, &hooks, Cancel::new()).await;
    assert!(report.success(), "{report:?}");
    let started = |what: &str| hooks.index(&format!("start create {what}"));
    assert!(
        started("aws.eks_fargate_profile.z_system") < started("aws.eks_fargate_profile.a_env"),
        "{:?}",
        hooks.events()
    );
    assert!(
        started("aws.eks_fargate_profile.z_system") < started("aws.vpc.a_alone"),
        "{:?}",
        hooks.events()
    );
    assert!(
        started("aws.vpc.after0") < started("aws.vpc.a_alone"),
        "{:?}",
        hooks.events()
    );
}

#[tokio::test]
async fn cancel_stops_new_work_but_lets_in_flight_finish() {
    let fake = FakeProvider::in_memory("s");
    fake.edit(|w| w.faults.delay_ms = 50);
    let desired = network("10.0.0.0/16", 3);
    let mut state = State::new("s");
    let plan = plan_for(&desired, &state, &BTreeMap::new(), Mode::Apply);
    let hooks = Recorder::default();
    let cancel = Cancel::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(75)).await;
        c2.cancel();
    });
    let report = apply(&fake, &plan, &mut state, 10, &hooks, cancel).await;
    assert!(report.interrupted);
    assert!(!report.not_started.is_empty());
    // Whatever the cloud has, the state has: nothing in flight was abandoned.
    assert_eq!(fake.world().objects.len(), state.resources().len());
    assert!(state.resources().len() >= 3);
}

#[tokio::test]
async fn destroy_deletes_in_reverse_dependency_order() {
    let fake = FakeProvider::in_memory("s");
    let desired = network("10.0.0.0/16", 2);
    let mut state = State::new("s");
    let hooks = Recorder::default();
    apply(
        &fake,
        &plan_for(&desired, &state, &BTreeMap::new(), Mode::Apply),
        &mut state,
        10,
        &hooks,
        Cancel::new(),
    )
    .await;
    let live = refresh(&fake, &state).await;
    let plan = plan_for(&desired, &state, &live, Mode::Destroy { env: None });
    let hooks = Recorder::default();
    let report = apply(&fake, &plan, &mut state, 10, &hooks, Cancel::new()).await;
    assert!(report.success());
    assert!(state.resources().is_empty());
    assert!(fake.world().objects.is_empty());
    assert!(
        hooks.index("done delete aws.route_table_association.s0")
            < hooks.index("start delete aws.subnet.s0")
    );
    assert!(hooks.index("done delete aws.subnet.s1") < hooks.index("start delete aws.vpc.main"));
    assert!(
        hooks.index("done delete aws.internet_gateway.main")
            < hooks.index("start delete aws.vpc.main")
    );
}

#[test]
fn a_plan_whose_operations_wait_on_each_other_is_named_before_anything_runs() {
    let change = |addr: &str, action: Action, deps: &[&str], prior: &[&str]| Change {
        addr: a(addr),
        action,
        before: None,
        after: None,
        changed: vec![],
        replace_because: vec![],
        depends_on: deps.iter().map(|d| a(d)).collect(),
        prior_depends_on: prior.iter().map(|d| a(d)).collect(),
        replaced_with: None,
        protected: false,
        create_before_destroy: false,
        env: None,
        serial_group: None,
    };
    // Two replaced objects whose dependency flipped between the state and
    // the stack: each delete must wait for the other's.
    let flipped = [
        change(
            "aws.security_group.x",
            Action::Replace,
            &["aws.security_group.y"],
            &[],
        ),
        change(
            "aws.security_group.y",
            Action::Replace,
            &[],
            &["aws.security_group.x"],
        ),
    ];
    let stuck = unorderable(&flipped).expect("a cycle");
    assert!(
        stuck
            .iter()
            .any(|(addr, _)| *addr == a("aws.security_group.x"))
    );
    // Ordinary plans order.
    let fine = [
        change("aws.vpc.main", Action::Replace, &[], &[]),
        change(
            "aws.subnet.a",
            Action::Replace,
            &["aws.vpc.main"],
            &["aws.vpc.main"],
        ),
        change(
            "aws.subnet.b",
            Action::Delete,
            &["aws.vpc.main"],
            &["aws.vpc.main"],
        ),
    ];
    assert!(unorderable(&fine).is_none());
}

/// A state that takes `write` for every save, and says what each saved.
struct SlowSink<'a> {
    state: State,
    write: Duration,
    fail: bool,
    hooks: &'a Recorder,
    saves: usize,
}

impl StateSink for SlowSink<'_> {
    fn record_all(
        &mut self,
        records: &[(Address, Option<ResourceState>)],
    ) -> Result<(), StateError> {
        std::thread::sleep(self.write);
        self.saves += 1;
        if self.fail {
            return Err(StateError::Io {
                action: "write state file",
                path: "s.json".into(),
                source: std::io::Error::other("disk full"),
            });
        }
        for (addr, r) in records {
            self.hooks
                .events
                .lock()
                .unwrap()
                .push(format!("saved {addr}"));
            self.state.set(addr, r.clone());
        }
        Ok(())
    }
    fn state(&self) -> &State {
        &self.state
    }
}

/// Applies `plan` from empty through a [`SlowSink`] whose saves take 100 ms.
async fn apply_saving_slowly(
    plan: &Plan,
    fail: bool,
    hooks: &Recorder,
) -> (ApplyReport, State, usize) {
    let fake = FakeProvider::in_memory("s");
    fake.edit(|w| w.faults.delay_ms = 20);
    let p = providers(&fake);
    let ex = Executor {
        providers: &p,
        parallelism: 16,
        hooks,
        cancel: Cancel::new(),
        allow_data_loss: false,
    };
    let mut sink = SlowSink {
        state: State::new("s"),
        write: Duration::from_millis(100),
        fail,
        hooks,
        saves: 0,
    };
    let report = ex.apply(plan, &mut sink).await;
    (report, sink.state, sink.saves)
}

#[tokio::test]
async fn resources_that_finish_together_are_saved_in_one_write_before_their_dependents_start() {
    let mut rs = Vec::new();
    for i in 0..12 {
        rs.push(Resource::new(a(&format!("aws.vpc.v{i}"))).attr("cidr_block", "10.0.0.0/16"));
    }
    rs.push(
        Resource::new(a("aws.subnet.s"))
            .attr("vpc_id", Expr::reference(&a("aws.vpc.v3"), "id"))
            .attr("cidr_block", "10.0.1.0/24"),
    );
    let desired = Desired::new(rs).unwrap();
    let plan = plan_for(&desired, &State::new("s"), &BTreeMap::new(), Mode::Apply);
    let hooks = Recorder::default();
    let (report, state, saves) = apply_saving_slowly(&plan, false, &hooks).await;
    assert!(report.success(), "{report:?}");
    assert_eq!(state.resources().len(), 13);
    // One write per resource would be 13; the twelve VPCs finish together.
    assert!(saves <= 4, "{saves} saves: {:?}", hooks.events());
    assert!(hooks.index("saved aws.vpc.v3") < hooks.index("start create aws.subnet.s"));

    // A save that fails fails every resource it held, and nothing more starts.
    let hooks = Recorder::default();
    let (report, state, _) = apply_saving_slowly(&plan, true, &hooks).await;
    assert!(report.state_error.is_some());
    assert!(state.resources().is_empty());
    assert!(report.failed.len() >= 2, "{report:?}");
    assert!(
        report.failed.iter().all(|f| f.error.contains("s.json")),
        "{report:?}"
    );
    assert!(report.done.is_empty());
    assert!(
        !hooks
            .events()
            .contains(&"start create aws.subnet.s".to_string())
    );
}
