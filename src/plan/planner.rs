//! The planner: a pure function of desired graph, prior state and refreshed
//! live objects.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{Action, Change, Mode};
use crate::addr::Address;
use crate::drift::Finding;
use crate::provider::Discovery;
use crate::resource::{Cbd, Desired, Expr, Live, Reference, spec_opt};
use crate::state::ResourceState;

/// Everything the planner looks at.
pub struct PlanInput<'a> {
    pub desired: &'a Desired,
    /// The last state's resources.
    pub prior: &'a BTreeMap<Address, ResourceState>,
    /// What refresh found for each prior address (`None`: gone). Addresses
    /// missing here were not refreshed and are taken as the prior says.
    pub live: &'a BTreeMap<Address, Option<Live>>,
    /// What exists beside the state's objects.
    pub discovered: &'a Discovery,
    pub mode: &'a Mode,
}

/// Why no plan can be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "environment `{env}` cannot be destroyed alone: `{dependent}` (outside it) depends on `{dependency}`"
    )]
    EnvDependency {
        env: String,
        dependent: Box<Address>,
        dependency: Box<Address>,
    },
    #[error("the state has no resources of environment `{0}`")]
    EmptyEnv(String),
}

/// Computes changes and drift.
pub fn plan(input: &PlanInput<'_>) -> Result<(Vec<Change>, Vec<Finding>), PlanError> {
    let drift = crate::drift::findings(input.prior, input.live, input.discovered);
    let current = |addr: &Address| -> Option<Live> {
        match input.live.get(addr) {
            Some(live) => live.clone(),
            None => input.prior.get(addr).map(ResourceState::live),
        }
    };
    let changes = match input.mode {
        Mode::Apply => plan_apply(input, &current),
        Mode::Destroy { env } => plan_destroy(input, env.as_deref(), &current)?,
    };
    Ok((changes, drift))
}

fn plan_apply(input: &PlanInput<'_>, current: &dyn Fn(&Address) -> Option<Live>) -> Vec<Change> {
    let desired = input.desired;
    let mut changes = Vec::new();
    // Values known at plan time, per address, for substituting references.
    let mut known: BTreeMap<Address, BTreeMap<String, Value>> = BTreeMap::new();
    // Replaced objects, with the container whose replacement caused theirs.
    let mut replaced: BTreeMap<Address, Option<Address>> = BTreeMap::new();
    for addr in desired.graph().topo_order() {
        let Some(resource) = desired.get_opt(&addr) else {
            continue;
        };
        let spec = resource.spec();
        let lookup = |r: &Reference| {
            known
                .get(&r.addr)
                .and_then(|attrs| attrs.get(&r.attr))
                .cloned()
        };
        let mut after: BTreeMap<String, Expr> = resource
            .attrs()
            .iter()
            .map(|(k, e)| (k.clone(), e.substitute(&lookup)))
            .collect();
        let outputs = spec.map(|s| s.outputs).unwrap_or_default();
        let force_new = spec.map(|s| s.force_new).unwrap_or_default();
        // An object on its way out is made again once it is gone.
        let before = current(&addr).filter(|l| !l.is_deleting());

        let (action, changed, replace_because) = match &before {
            None => (Action::Create, Vec::new(), Vec::new()),
            Some(live) => {
                let changed: Vec<String> = after
                    .iter()
                    .filter(|(k, e)| e.known().as_ref() != live.attrs.get(*k))
                    .map(|(k, _)| k.clone())
                    .collect();
                // `attr/json/pointer`: only that part of the attribute forces
                // (a Kubernetes object's immutable fields in its manifest).
                let forcing: Vec<String> = force_new
                    .iter()
                    .filter(|f| match f.split_once('/') {
                        None => changed.iter().any(|c| c == *f),
                        Some((attr, path)) => {
                            let pointer = format!("/{path}");
                            let want = after.get(attr).and_then(Expr::known);
                            changed.iter().any(|c| c == attr)
                                && want.as_ref().is_some_and(|w| {
                                    w.pointer(&pointer)
                                        != live.attrs.get(attr).and_then(|l| l.pointer(&pointer))
                                })
                        }
                    })
                    .map(|f| f.to_string())
                    .collect();
                let action = if !forcing.is_empty() {
                    Action::Replace
                } else if !changed.is_empty() {
                    Action::Update
                } else {
                    Action::NoOp
                };
                (action, changed, forcing)
            }
        };
        // What lives inside a replaced object goes with it: the new
        // container starts empty, whatever its contents' attributes say.
        let replaced_with = resource.within_opt().and_then(|c| {
            replaced
                .get(c)
                .map(|cause| cause.clone().unwrap_or(c.clone()))
        });
        let action = match (&replaced_with, action) {
            (Some(_), Action::NoOp | Action::Update) => Action::Replace,
            (_, a) => a,
        };
        if action == Action::Replace {
            replaced.insert(addr.clone(), replaced_with.clone());
        }

        let changed_by_update = spec.map(|s| s.changed_by_update).unwrap_or_default();
        for out in outputs {
            let value = match (&before, action) {
                (Some(live), Action::NoOp) => live.attrs.get(*out).cloned().map(Expr::Lit),
                (Some(live), Action::Update) if !changed_by_update.contains(out) => {
                    live.attrs.get(*out).cloned().map(Expr::Lit)
                }
                _ => None,
            };
            after.insert(
                out.to_string(),
                value.unwrap_or_else(|| Expr::reference(&addr, out)),
            );
        }
        known.insert(
            addr.clone(),
            after
                .iter()
                .filter_map(|(k, e)| e.known().map(|v| (k.clone(), v)))
                .collect(),
        );
        changes.push(Change {
            addr: addr.clone(),
            action,
            before,
            after: Some(after),
            changed,
            replace_because,
            depends_on: resource.dependencies(),
            prior_depends_on: input
                .prior
                .get(&addr)
                .map(|p| p.depends_on.clone())
                .unwrap_or_default(),
            replaced_with,
            // The stack decides for what it declares; the state for what it
            // no longer does.
            protected: resource.is_protected(),
            create_before_destroy: false,
            env: resource.env_opt().map(str::to_string),
            serial_group: resource.serial_group_opt().map(str::to_string),
        });
    }
    for (addr, prior) in input.prior {
        if desired.get_opt(addr).is_some() {
            continue;
        }
        if let Some(live) = current(addr) {
            changes.push(delete(addr, prior, live));
        }
    }
    create_before_destroy(&mut changes);
    changes
}

/// A replaced object that something keeps using (a dependent updated in
/// place, e.g. an instance onto a new security group) is created first when
/// its kind allows two side by side, so the users move over before it goes.
fn create_before_destroy(changes: &mut [Change]) {
    let used: BTreeSet<Address> = changes
        .iter()
        .filter(|c| c.action == Action::Update)
        .flat_map(|c| c.depends_on.iter().cloned())
        .collect();
    for c in changes.iter_mut() {
        if c.action != Action::Replace || c.replaced_with.is_some() || !used.contains(&c.addr) {
            continue;
        }
        c.create_before_destroy =
            match spec_opt(&c.addr.kind_key()).map(|s| s.create_before_destroy) {
                Some(Cbd::WhenChanged(unique)) => {
                    unique.iter().any(|u| c.changed.iter().any(|k| k == u))
                }
                _ => false,
            };
    }
}

fn plan_destroy(
    input: &PlanInput<'_>,
    env: Option<&str>,
    current: &dyn Fn(&Address) -> Option<Live>,
) -> Result<Vec<Change>, PlanError> {
    let targeted = |r: &ResourceState| env.is_none_or(|e| r.env.as_deref() == Some(e));
    if let Some(env) = env {
        if !input.prior.values().any(&targeted) {
            return Err(PlanError::EmptyEnv(env.to_string()));
        }
        for (addr, r) in input.prior {
            if targeted(r) {
                continue;
            }
            if let Some(dep) = r
                .depends_on
                .iter()
                .find(|d| input.prior.get(*d).is_some_and(&targeted))
            {
                return Err(PlanError::EnvDependency {
                    env: env.to_string(),
                    dependent: Box::new(addr.clone()),
                    dependency: Box::new(dep.clone()),
                });
            }
        }
    }
    Ok(input
        .prior
        .iter()
        .filter(|(_, r)| targeted(r))
        .filter_map(|(addr, prior)| {
            current(addr).map(|live| {
                let mut d = delete(addr, prior, live);
                // The stack decides for what it declares; the state for
                // what it no longer does.
                if let Some(r) = input.desired.get_opt(addr) {
                    d.protected = r.is_protected();
                }
                // What the stack orders it after now, too (an edge added
                // since the state was written: a namespace after its
                // Fargate profile).
                if let Some(r) = input.desired.get_opt(addr) {
                    d.depends_on.extend(
                        r.dependencies()
                            .into_iter()
                            .filter(|a| input.prior.contains_key(a)),
                    );
                }
                // A state written before serial groups were kept: the stack's.
                if d.serial_group.is_none() {
                    d.serial_group = input
                        .desired
                        .get_opt(addr)
                        .and_then(|r| r.serial_group_opt())
                        .map(str::to_string);
                }
                d
            })
        })
        .collect())
}

fn delete(addr: &Address, prior: &ResourceState, live: Live) -> Change {
    Change {
        addr: addr.clone(),
        action: Action::Delete,
        before: Some(live),
        after: None,
        changed: Vec::new(),
        replace_because: Vec::new(),
        depends_on: prior.depends_on.clone(),
        prior_depends_on: prior.depends_on.clone(),
        replaced_with: None,
        protected: prior.protected,
        create_before_destroy: false,
        env: prior.env.clone(),
        serial_group: prior.serial_group.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::FindingKind;
    use crate::resource::Resource;
    use serde_json::json;

    fn a(s: &str) -> Address {
        s.parse().unwrap()
    }

    fn desired() -> Desired {
        let vpc = a("aws.vpc.main");
        Desired::new(vec![
            Resource::new(vpc.clone()).attr("cidr_block", "10.0.0.0/16"),
            Resource::new(a("aws.subnet.a"))
                .attr("vpc_id", Expr::reference(&vpc, "id"))
                .attr("cidr_block", "10.0.0.0/20")
                .attr("availability_zone", "ap-south-1a")
                .env("blue"),
        ])
        .unwrap()
    }

    fn state(id: &str, attrs: Value, deps: &[&str], env: Option<&str>) -> ResourceState {
        ResourceState {
            serial_group: None,
            id: id.into(),
            attributes: serde_json::from_value(attrs).unwrap(),
            depends_on: deps.iter().map(|d| a(d)).collect(),
            env: env.map(str::to_string),
            protected: false,
        }
    }

    fn applied() -> BTreeMap<Address, ResourceState> {
        [
            (a("aws.vpc.main"), state("vpc-1", json!({"cidr_block": "10.0.0.0/16", "id": "vpc-1"}), &[], None)),
            (
                a("aws.subnet.a"),
                state(
                    "subnet-1",
                    json!({"vpc_id": "vpc-1", "cidr_block": "10.0.0.0/20", "availability_zone": "ap-south-1a", "id": "subnet-1", "arn": "arn:s"}),
                    &["aws.vpc.main"],
                    Some("blue"),
                ),
            ),
        ]
        .into()
    }

    fn live_of(prior: &BTreeMap<Address, ResourceState>) -> BTreeMap<Address, Option<Live>> {
        prior
            .iter()
            .map(|(a, r)| (a.clone(), Some(r.live())))
            .collect()
    }

    fn run(
        desired: &Desired,
        prior: &BTreeMap<Address, ResourceState>,
        live: &BTreeMap<Address, Option<Live>>,
        mode: Mode,
    ) -> Result<(Vec<Change>, Vec<Finding>), PlanError> {
        plan(&PlanInput {
            desired,
            prior,
            live,
            discovered: &Discovery::default(),
            mode: &mode,
        })
    }

    fn actions(changes: &[Change]) -> Vec<(String, Action)> {
        changes
            .iter()
            .map(|c| (c.addr.to_string(), c.action))
            .collect()
    }

    #[test]
    fn empty_state_creates_everything_with_unknown_references() {
        let d = desired();
        let (changes, drift) = run(&d, &BTreeMap::new(), &BTreeMap::new(), Mode::Apply).unwrap();
        assert!(drift.is_empty());
        assert_eq!(
            actions(&changes),
            [
                ("aws.vpc.main".into(), Action::Create),
                ("aws.subnet.a".into(), Action::Create)
            ]
        );
        let after = changes[1].after.as_ref().unwrap();
        assert_eq!(after["vpc_id"], Expr::reference(&a("aws.vpc.main"), "id"));
        assert_eq!(after["id"], Expr::reference(&a("aws.subnet.a"), "id"));
        assert_eq!(changes[1].env.as_deref(), Some("blue"));
    }

    #[test]
    fn unchanged_is_noop_and_references_resolve_from_live() {
        let d = desired();
        let prior = applied();
        let (changes, drift) = run(&d, &prior, &live_of(&prior), Mode::Apply).unwrap();
        assert!(drift.is_empty());
        assert!(
            changes.iter().all(|c| c.action == Action::NoOp),
            "{changes:?}"
        );
        let after = changes[1].after.as_ref().unwrap();
        assert_eq!(after["vpc_id"], Expr::Lit(json!("vpc-1")));
    }

    #[test]
    fn an_immutable_field_inside_a_manifest_replaces_the_object() {
        let binding = a("k8s.role_binding.ns/deployer");
        let manifest = |role: &str, subject: &str| {
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "deployer", "namespace": "ns"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": [{"kind": "Group", "name": subject}],
            })
        };
        let prior: BTreeMap<Address, ResourceState> = [(
            binding.clone(),
            state(
                "ns/deployer",
                json!({"manifest": manifest("deployer", "team"), "id": "ns/deployer", "uid": "u"}),
                &[],
                None,
            ),
        )]
        .into();
        let plan_for = |m: serde_json::Value| {
            let d = Desired::new(vec![
                Resource::new(binding.clone()).attr("manifest", Expr::Lit(m)),
            ])
            .unwrap();
            run(&d, &prior, &live_of(&prior), Mode::Apply).unwrap().0
        };
        // Another subject: an update in place.
        let c = plan_for(manifest("deployer", "other"));
        assert_eq!(c[0].action, Action::Update);
        assert!(c[0].replace_because.is_empty());
        // Another role: roleRef is immutable, so the binding is replaced.
        let c = plan_for(manifest("admin", "team"));
        assert_eq!(c[0].action, Action::Replace);
        assert_eq!(c[0].replace_because, ["manifest/roleRef"]);
    }

    #[test]
    fn outputs_an_update_changes_are_known_only_after_apply() {
        let cert = a("tls.certificate.hook");
        let secret = a("k8s.secret.ns/hook");
        let d = Desired::new(vec![
            Resource::new(cert.clone())
                .attr("common_name", "hook")
                .attr("renewal_due", false),
            Resource::new(secret.clone()).attr(
                "manifest",
                Expr::map([("data", Expr::reference(&cert, "cert_pem_base64"))]),
            ),
        ])
        .unwrap();
        let prior: BTreeMap<Address, ResourceState> = [
            (
                cert.clone(),
                state(
                    "hook@t",
                    json!({"common_name": "hook", "renewal_due": false, "id": "hook@t", "cert_pem_base64": "OLD"}),
                    &[],
                    None,
                ),
            ),
            (
                secret.clone(),
                state(
                    "ns/hook",
                    json!({"manifest": {"data": "OLD"}, "id": "ns/hook", "uid": "u"}),
                    &["tls.certificate.hook"],
                    None,
                ),
            ),
        ]
        .into();
        // Fresh: nothing changes.
        let (c, _) = run(&d, &prior, &live_of(&prior), Mode::Apply).unwrap();
        assert!(c.iter().all(|c| c.action == Action::NoOp), "{c:?}");
        // Due for renewal: the certificate updates, and what uses it with it.
        let mut live = live_of(&prior);
        if let Some(Some(l)) = live.get_mut(&cert) {
            l.attrs.insert("renewal_due".into(), json!(true));
        }
        let (c, drift) = run(&d, &prior, &live, Mode::Apply).unwrap();
        assert_eq!(c[0].action, Action::Update);
        assert_eq!(c[1].action, Action::Update, "{c:?}");
        // Being due is time passing, not a change made outside slipway.
        assert!(drift.is_empty(), "{drift:?}");
    }

    #[test]
    fn what_lives_inside_a_replaced_object_is_replaced_with_it() {
        let cluster = a("aws.eks_cluster.main");
        let profile = a("aws.eks_fargate_profile.blue");
        let ns = a("k8s.namespace.blue");
        let sa = a("k8s.service_account.blue/app");
        let d = Desired::new(vec![
            Resource::new(cluster.clone())
                .attr("name", "c")
                .attr("subnet_ids", Expr::Lit(json!(["subnet-2"]))),
            Resource::new(profile.clone())
                .within(&cluster)
                .attr("cluster_name", Expr::reference(&cluster, "name")),
            Resource::new(ns.clone())
                .within(&cluster)
                .attr("manifest", Expr::map([("kind", Expr::str("Namespace"))])),
            Resource::new(sa.clone()).within(&ns).attr(
                "manifest",
                Expr::map([("kind", Expr::str("ServiceAccount"))]),
            ),
        ])
        .unwrap();
        let prior: BTreeMap<Address, ResourceState> = [
            (
                cluster.clone(),
                state(
                    "c",
                    json!({"name": "c", "subnet_ids": ["subnet-1"], "id": "c"}),
                    &[],
                    None,
                ),
            ),
            (
                profile.clone(),
                state(
                    "c/blue",
                    json!({"cluster_name": "c", "id": "c/blue"}),
                    &["aws.eks_cluster.main"],
                    None,
                ),
            ),
            (
                ns.clone(),
                state(
                    "blue",
                    json!({"manifest": {"kind": "Namespace"}, "id": "blue", "uid": "u1"}),
                    &["aws.eks_cluster.main"],
                    None,
                ),
            ),
            (
                sa.clone(),
                state(
                    "blue/app",
                    json!({"manifest": {"kind": "ServiceAccount"}, "id": "blue/app", "uid": "u2"}),
                    &["k8s.namespace.blue"],
                    None,
                ),
            ),
        ]
        .into();
        let (c, _) = run(&d, &prior, &live_of(&prior), Mode::Apply).unwrap();
        let by: BTreeMap<String, &Change> = c.iter().map(|c| (c.addr.to_string(), c)).collect();
        assert_eq!(by["aws.eks_cluster.main"].action, Action::Replace);
        assert_eq!(by["aws.eks_cluster.main"].replaced_with, None);
        for inside in [&profile, &ns, &sa] {
            let ch = by[&inside.to_string()];
            assert_eq!(ch.action, Action::Replace, "{inside}");
            // Named by the root cause, even two levels down.
            assert_eq!(ch.replaced_with.as_ref(), Some(&cluster), "{inside}");
            assert!(ch.replace_because.is_empty());
        }
        assert_eq!(
            by["k8s.service_account.blue/app"].prior_depends_on,
            [ns.clone()].into()
        );
        // Unchanged container: nothing inside moves.
        let mut same = prior.clone();
        if let Some(r) = same.get_mut(&cluster) {
            r.attributes
                .insert("subnet_ids".into(), json!(["subnet-2"]));
        }
        let (c, _) = run(&d, &same, &live_of(&same), Mode::Apply).unwrap();
        assert!(c.iter().all(|c| c.action == Action::NoOp), "{c:?}");
    }

    #[test]
    fn force_new_attribute_replaces_and_ripples_to_dependents() {
        let vpc = a("aws.vpc.main");
        let d = Desired::new(vec![
            Resource::new(vpc.clone()).attr("cidr_block", "10.1.0.0/16"),
            Resource::new(a("aws.subnet.a"))
                .attr("vpc_id", Expr::reference(&vpc, "id"))
                .attr("cidr_block", "10.0.0.0/20")
                .attr("availability_zone", "ap-south-1a")
                .env("blue"),
        ])
        .unwrap();
        let prior = applied();
        let (changes, _) = run(&d, &prior, &live_of(&prior), Mode::Apply).unwrap();
        assert_eq!(changes[0].action, Action::Replace);
        assert_eq!(changes[0].replace_because, ["cidr_block"]);
        // The subnet's vpc_id is now unknown, and vpc_id forces a new subnet.
        assert_eq!(changes[1].action, Action::Replace);
        assert_eq!(changes[1].replace_because, ["vpc_id"]);
    }

    #[test]
    fn in_place_update_lists_changed_attributes() {
        let d = Desired::new(vec![
            Resource::new(a("aws.vpc.main"))
                .attr("cidr_block", "10.0.0.0/16")
                .attr("tags", Expr::map([("Name", Expr::str("new"))])),
        ])
        .unwrap();
        let mut prior = applied();
        prior.remove(&a("aws.subnet.a"));
        let mut live = live_of(&prior);
        if let Some(Some(l)) = live.get_mut(&a("aws.vpc.main")) {
            l.attrs.insert("tags".into(), json!({"Name": "old"}));
        }
        let (changes, drift) = run(&d, &prior, &live, Mode::Apply).unwrap();
        assert_eq!(changes[0].action, Action::Update);
        assert_eq!(changes[0].changed, ["tags"]);
        assert_eq!(drift.len(), 1);
        assert_eq!(drift[0].kind, FindingKind::Modified);
        assert_eq!(drift[0].path.as_deref(), Some("tags"));
    }

    #[test]
    fn deleted_outside_is_drift_and_recreated() {
        let d = desired();
        let prior = applied();
        let mut live = live_of(&prior);
        live.insert(a("aws.subnet.a"), None);
        let (changes, drift) = run(&d, &prior, &live, Mode::Apply).unwrap();
        assert_eq!(changes[1].action, Action::Create);
        assert_eq!(drift[0].kind, FindingKind::Deleted);
        assert_eq!(drift[0].address, a("aws.subnet.a"));
    }

    #[test]
    fn removed_from_stack_is_deleted_with_state_dependencies() {
        let d = Desired::new(vec![
            Resource::new(a("aws.vpc.main")).attr("cidr_block", "10.0.0.0/16"),
        ])
        .unwrap();
        let prior = applied();
        let (changes, _) = run(&d, &prior, &live_of(&prior), Mode::Apply).unwrap();
        let del = changes.iter().find(|c| c.action == Action::Delete).unwrap();
        assert_eq!(del.addr, a("aws.subnet.a"));
        assert!(del.depends_on.contains(&a("aws.vpc.main")));
    }

    #[test]
    fn destroy_env_targets_only_that_environment() {
        let d = desired();
        let prior = applied();
        let (changes, _) = run(
            &d,
            &prior,
            &live_of(&prior),
            Mode::Destroy {
                env: Some("blue".into()),
            },
        )
        .unwrap();
        assert_eq!(actions(&changes), [("aws.subnet.a".into(), Action::Delete)]);
        let all = run(&d, &prior, &live_of(&prior), Mode::Destroy { env: None })
            .unwrap()
            .0;
        assert_eq!(all.len(), 2);
        assert!(matches!(
            run(
                &d,
                &prior,
                &live_of(&prior),
                Mode::Destroy {
                    env: Some("green".into())
                }
            ),
            Err(PlanError::EmptyEnv(_))
        ));
    }

    #[test]
    fn a_destroy_orders_by_the_stacks_dependencies_as_well_as_the_recorded_ones() {
        // Recorded before the stack ordered the subnet after the VPC.
        let mut prior = applied();
        if let Some(r) = prior.get_mut(&a("aws.subnet.a")) {
            r.depends_on.clear();
        }
        let (changes, _) = run(
            &desired(),
            &prior,
            &live_of(&prior),
            Mode::Destroy { env: None },
        )
        .unwrap();
        let subnet = changes
            .iter()
            .find(|c| c.addr == a("aws.subnet.a"))
            .unwrap();
        assert!(subnet.depends_on.contains(&a("aws.vpc.main")), "{subnet:?}");
    }

    #[test]
    fn an_object_being_deleted_is_made_again_by_apply_and_waited_for_by_destroy() {
        let d = desired();
        let prior = applied();
        let mut live = live_of(&prior);
        if let Some(Some(l)) = live.get_mut(&a("aws.subnet.a")) {
            l.attrs.insert(Live::DELETING.into(), json!(true));
        }
        let (changes, drift) = run(&d, &prior, &live, Mode::Apply).unwrap();
        let subnet = changes
            .iter()
            .find(|c| c.addr == a("aws.subnet.a"))
            .unwrap();
        assert_eq!(subnet.action, Action::Create);
        assert_eq!(drift[0].kind, FindingKind::Deleted);
        let (changes, _) = run(&d, &prior, &live, Mode::Destroy { env: None }).unwrap();
        let subnet = changes
            .iter()
            .find(|c| c.addr == a("aws.subnet.a"))
            .unwrap();
        assert_eq!(subnet.action, Action::Delete);
    }

    #[test]
    fn destroy_env_refuses_when_shared_resources_depend_on_it() {
        let mut prior = applied();
        prior.insert(
            a("aws.route_table_association.x"),
            state("rta-1", json!({}), &["aws.subnet.a"], None),
        );
        let err = run(
            &desired(),
            &prior,
            &live_of(&prior),
            Mode::Destroy {
                env: Some("blue".into()),
            },
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("`aws.route_table_association.x`"),
            "{err}"
        );
    }

    #[test]
    fn unmanaged_objects_are_reported() {
        let d = desired();
        let prior = applied();
        let discovered = Discovery {
            tagged: vec![crate::provider::Tagged {
                addr: a("aws.subnet.z"),
                id: "subnet-9".into(),
                claims_address: true,
            }],
            ..Discovery::default()
        };
        let (_, drift) = plan(&PlanInput {
            desired: &d,
            prior: &prior,
            live: &live_of(&prior),
            discovered: &discovered,
            mode: &Mode::Apply,
        })
        .unwrap();
        assert_eq!(drift.len(), 1);
        assert_eq!(drift[0].kind, FindingKind::Unmanaged);
        assert_eq!(drift[0].id.as_deref(), Some("subnet-9"));
    }
}
