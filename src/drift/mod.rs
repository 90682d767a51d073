//! Drift: everything that differs from what the last apply recorded, as
//! findings. Pure data and pure diffing; the reads are refresh's.
//!
//! Kinds of finding, per address: *modified* (an attribute path, its
//! recorded and live values), *deleted* outside slipway, *extra* (a member
//! of a managed collection the state does not know: a rule added to a
//! managed security group, a subject added to a managed binding),
//! *unmanaged* (tagged or labelled as the stack's, not tracked),
//! *duplicate* (several objects claim one address) and *orphaned* (a load
//! balancer, target group or security group the controller made for an
//! Ingress or Service that no longer exists).

pub mod ignore;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::addr::{Address, Domain};
use crate::provider::{ControllerMade, Discovery, Fronts};
use crate::resource::{Live, spec_opt};
use crate::state::ResourceState;

/// What kind of difference a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    Modified,
    Deleted,
    Extra,
    Unmanaged,
    Duplicate,
    Orphaned,
}

impl FindingKind {
    pub const ALL: [FindingKind; 6] = [
        FindingKind::Modified,
        FindingKind::Deleted,
        FindingKind::Extra,
        FindingKind::Unmanaged,
        FindingKind::Duplicate,
        FindingKind::Orphaned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Modified => "modified",
            FindingKind::Deleted => "deleted",
            FindingKind::Extra => "extra",
            FindingKind::Unmanaged => "unmanaged",
            FindingKind::Duplicate => "duplicate",
            FindingKind::Orphaned => "orphaned",
        }
    }
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// The address concerned: the state's, the one an object claims, or
    /// one made from its kind and id.
    pub address: Address,
    /// The cloud id (of the deleted, unmanaged, extra or orphaned object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The attribute path (`tags.Owner`, `manifest.subjects`) of a
    /// modification, or the collection holding an extra member (`rules`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<Value>,
    /// Every object claiming the address, the tracked one first (duplicates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    /// What it means, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The `--ignore` pattern or `[drift] ignore` entry that accepts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored_by: Option<String>,
}

impl Finding {
    fn new(kind: FindingKind, address: &Address) -> Self {
        Finding {
            kind,
            address: address.clone(),
            id: None,
            path: None,
            recorded: None,
            live: None,
            ids: Vec::new(),
            detail: None,
            ignored_by: None,
        }
    }

    pub fn ignored(&self) -> bool {
        self.ignored_by.is_some()
    }
}

/// Findings counted per kind, ignored ones apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub by_kind: BTreeMap<FindingKind, usize>,
    pub ignored: usize,
}

impl Counts {
    pub fn of(findings: &[Finding]) -> Self {
        let mut c = Counts::default();
        for kind in FindingKind::ALL {
            c.by_kind.insert(kind, 0);
        }
        for f in findings {
            if f.ignored() {
                c.ignored += 1;
            } else {
                *c.by_kind.entry(f.kind).or_default() += 1;
            }
        }
        c
    }

    /// Findings not ignored.
    pub fn drifted(&self) -> usize {
        self.by_kind.values().sum()
    }

    /// `2 modified, 1 unmanaged; 3 ignored`.
    pub fn summary(&self) -> String {
        let mut s = self
            .by_kind
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{n} {}", k.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        if s.is_empty() {
            s.push_str("none");
        }
        if self.ignored > 0 {
            let _ = write!(s, "; {} ignored", self.ignored);
        }
        s
    }
}

/// Everything that differs between the state, what refresh read, and what
/// it discovered besides.
pub fn findings(
    prior: &BTreeMap<Address, ResourceState>,
    live: &BTreeMap<Address, Option<Live>>,
    discovered: &Discovery,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for (addr, recorded) in prior {
        match live.get(addr) {
            // Not refreshed.
            None => {}
            Some(None) => out.push(Finding {
                id: Some(recorded.id.clone()),
                detail: Some("deleted outside slipway".to_string()),
                ..Finding::new(FindingKind::Deleted, addr)
            }),
            Some(Some(now)) if now.is_deleting() => out.push(Finding {
                id: Some(recorded.id.clone()),
                detail: Some("being deleted (terminating)".to_string()),
                ..Finding::new(FindingKind::Deleted, addr)
            }),
            Some(Some(now)) => {
                let spec = spec_opt(&addr.kind_key());
                let clock_driven = spec.map(|s| s.clock_driven).unwrap_or_default();
                let volatile = spec.map(|s| s.volatile).unwrap_or_default();
                let names: BTreeSet<&String> =
                    recorded.attributes.keys().chain(now.attrs.keys()).collect();
                for name in names {
                    if clock_driven.contains(&name.as_str()) || volatile.contains(&name.as_str()) {
                        continue;
                    }
                    diff(
                        addr,
                        &recorded.id,
                        &mut vec![Seg::Key(name.clone())],
                        recorded.attributes.get(name),
                        now.attrs.get(name),
                        &mut out,
                    );
                }
            }
        }
    }
    for e in &discovered.extras {
        out.push(Finding {
            id: Some(e.id.clone()),
            path: Some(e.collection.clone()),
            live: Some(e.detail.clone()),
            detail: Some(format!(
                "`{}` is in its {} but the stack does not declare it",
                e.id,
                e.collection.replace('_', " ")
            )),
            ..Finding::new(FindingKind::Extra, &e.of)
        });
    }
    out.extend(claims(prior, discovered));
    out.sort_by(|a, b| {
        (&a.address, a.kind, &a.path, &a.id).cmp(&(&b.address, b.kind, &b.path, &b.id))
    });
    out
}

/// Tagged objects the state does not track: unmanaged, or duplicates when
/// the address they claim is taken (by the state or by another of them).
fn claims(prior: &BTreeMap<Address, ResourceState>, discovered: &Discovery) -> Vec<Finding> {
    let mut by_addr: BTreeMap<&Address, Vec<&crate::provider::Tagged>> = BTreeMap::new();
    for t in &discovered.tagged {
        by_addr.entry(&t.addr).or_default().push(t);
    }
    let mut out = Vec::new();
    for (addr, tagged) in by_addr {
        let mut ids: Vec<String> = tagged.iter().map(|t| t.id.clone()).collect();
        ids.sort();
        ids.dedup();
        let tracked = prior.get(addr).map(|r| r.id.clone());
        match (tracked, ids.as_slice()) {
            (None, [id]) => {
                let bare = tagged.iter().all(|t| !t.claims_address);
                out.push(Finding {
                    id: Some(id.clone()),
                    detail: Some(if bare {
                        "tagged as this stack's (without an address tag) but not in the state"
                            .to_string()
                    } else {
                        "tagged as this stack's but not in the state".to_string()
                    }),
                    ..Finding::new(FindingKind::Unmanaged, addr)
                });
            }
            (None, _) => out.push(Finding {
                detail: Some(format!(
                    "{} objects claim this address and the state tracks none of them",
                    ids.len()
                )),
                ids,
                ..Finding::new(FindingKind::Duplicate, addr)
            }),
            (Some(tracked), _) => {
                let others = ids.join("`, `");
                out.push(Finding {
                    id: Some(tracked.clone()),
                    detail: Some(format!(
                        "the state tracks `{tracked}`; also tagged as it: `{others}`"
                    )),
                    ids: std::iter::once(tracked).chain(ids).collect(),
                    ..Finding::new(FindingKind::Duplicate, addr)
                });
            }
        }
    }
    out
}

/// What the controller made for Ingresses, IngressGroups and Services that
/// no longer exist (`fronted`: what exists now).
pub fn orphans(made: &[ControllerMade], fronted: &BTreeSet<Fronts>) -> Vec<Finding> {
    let mut out = Vec::new();
    for m in made {
        let Some(fronts) = &m.fronts else { continue };
        if fronted.contains(fronts) {
            continue;
        }
        let Some(addr) = Address::made_up(Domain::Aws, m.kind, &m.name) else {
            continue;
        };
        let what = match fronts {
            Fronts::Ingress(n) => format!("Ingress `{n}`"),
            Fronts::IngressGroup(n) => format!("IngressGroup `{n}`"),
            Fronts::Service(n) => format!("Service `{n}`"),
        };
        out.push(Finding {
            id: Some(m.id.clone()),
            detail: Some(format!(
                "made by the load balancer controller for {what}, which no longer exists"
            )),
            ..Finding::new(FindingKind::Orphaned, &addr)
        });
    }
    out
}

/// One step of an attribute path.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `tags.Owner`, `manifest.spec.containers[0].image`, `tags["a.b/c"]`.
fn render_path(path: &[Seg]) -> String {
    let mut s = String::new();
    for (i, seg) in path.iter().enumerate() {
        match seg {
            Seg::Index(n) => {
                let _ = write!(s, "[{n}]");
            }
            Seg::Key(k)
                if !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                if i > 0 {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Key(k) => {
                let _ = write!(s, "[{}]", Value::String(k.clone()));
            }
        }
    }
    s
}

/// The members `live` adds when it kept every member of `recorded`
/// (counting repeats); `None` when it dropped or changed one.
fn only_adds(recorded: &[Value], live: &[Value]) -> Option<Vec<Value>> {
    if live.len() <= recorded.len() {
        return None;
    }
    let mut rest: Vec<&Value> = live.iter().collect();
    for r in recorded {
        let i = rest.iter().position(|l| covers(l, r))?;
        rest.remove(i);
    }
    Some(rest.into_iter().cloned().collect())
}

/// Whether `live` has everything `recorded` has: a recorded member holds
/// only the fields slipway manages, the live one also what the server
/// defaulted (a subject's `apiGroup`).
fn covers(live: &Value, recorded: &Value) -> bool {
    match (live, recorded) {
        (Value::Object(l), Value::Object(r)) => r
            .iter()
            .all(|(k, rv)| l.get(k).is_some_and(|lv| covers(lv, rv))),
        (Value::Array(l), Value::Array(r)) => {
            l.len() == r.len() && l.iter().zip(r).all(|(lv, rv)| covers(lv, rv))
        }
        _ => live == recorded,
    }
}

fn diff(
    addr: &Address,
    id: &str,
    path: &mut Vec<Seg>,
    recorded: Option<&Value>,
    live: Option<&Value>,
    out: &mut Vec<Finding>,
) {
    if recorded == live {
        return;
    }
    match (recorded, live) {
        (Some(Value::Object(r)), Some(Value::Object(l))) => {
            let keys: BTreeSet<&String> = r.keys().chain(l.keys()).collect();
            for k in keys {
                path.push(Seg::Key(k.clone()));
                diff(addr, id, path, r.get(k), l.get(k), out);
                path.pop();
            }
        }
        (Some(Value::Array(r)), Some(Value::Array(l))) => {
            if let Some(added) = only_adds(r, l) {
                for member in added {
                    out.push(Finding {
                        id: Some(id.to_string()),
                        path: Some(render_path(path)),
                        detail: Some(format!(
                            "a member was added to `{}` outside slipway",
                            render_path(path)
                        )),
                        live: Some(member),
                        ..Finding::new(FindingKind::Extra, addr)
                    });
                }
            } else if r.len() == l.len() {
                for (i, (rx, lx)) in r.iter().zip(l).enumerate() {
                    path.push(Seg::Index(i));
                    diff(addr, id, path, Some(rx), Some(lx), out);
                    path.pop();
                }
            } else {
                out.push(modified(addr, id, path, recorded, live));
            }
        }
        _ => out.push(modified(addr, id, path, recorded, live)),
    }
}

fn modified(
    addr: &Address,
    id: &str,
    path: &[Seg],
    recorded: Option<&Value>,
    live: Option<&Value>,
) -> Finding {
    Finding {
        id: Some(id.to_string()),
        path: Some(render_path(path)),
        recorded: recorded.cloned(),
        live: live.cloned(),
        ..Finding::new(FindingKind::Modified, addr)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::provider::{Extra, Tagged};

    fn a(s: &str) -> Address {
        s.parse().unwrap()
    }

    fn state(addr: &str, id: &str, attrs: Value) -> (Address, ResourceState) {
        let mut r: ResourceState = serde_json::from_value(json!({
            "id": id, "attributes": attrs, "depends_on": [],
        }))
        .unwrap();
        r.id = id.to_string();
        (a(addr), r)
    }

    fn live(id: &str, attrs: Value) -> Option<Live> {
        Some(Live {
            id: id.to_string(),
            attrs: serde_json::from_value(attrs).unwrap(),
        })
    }

    #[test]
    fn modifications_are_reported_by_attribute_path() {
        let prior: BTreeMap<_, _> = [state(
            "aws.vpc.main",
            "vpc-1",
            json!({"tags": {"Name": "a", "x.y/z": "1"}, "dns": true, "cidrs": ["a", "b"]}),
        )]
        .into();
        let now = [(
            a("aws.vpc.main"),
            live(
                "vpc-1",
                json!({"tags": {"Name": "b", "x.y/z": "1", "Owner": "me"}, "dns": true, "cidrs": ["a", "c"]}),
            ),
        )]
        .into();
        let f = findings(&prior, &now, &Discovery::default());
        let paths: Vec<(&str, Option<&Value>, Option<&Value>)> = f
            .iter()
            .map(|f| {
                (
                    f.path.as_deref().unwrap(),
                    f.recorded.as_ref(),
                    f.live.as_ref(),
                )
            })
            .collect();
        assert_eq!(
            paths,
            [
                ("cidrs[1]", Some(&json!("b")), Some(&json!("c"))),
                ("tags.Name", Some(&json!("a")), Some(&json!("b"))),
                ("tags.Owner", None, Some(&json!("me"))),
            ]
        );
        assert!(f.iter().all(|f| f.kind == FindingKind::Modified));
        assert_eq!(
            render_path(&[Seg::Key("tags".into()), Seg::Key("x.y/z".into())]),
            "tags[\"x.y/z\"]"
        );
    }

    #[test]
    fn an_instances_new_public_address_is_not_drift_but_its_type_is() {
        let prior: BTreeMap<_, _> = [state(
            "aws.instance.jenkins_master",
            "i-1",
            json!({"instance_type": "t3.medium", "public_ip": "54.1.2.3", "public_dns": "ec2-54-1-2-3"}),
        )]
        .into();
        // An Elastic IP was associated, and someone changed the type.
        let now = [(
            a("aws.instance.jenkins_master"),
            live(
                "i-1",
                json!({"instance_type": "t3.large", "public_ip": "198.51.100.7", "public_dns": "ec2-198-51-100-7"}),
            ),
        )]
        .into();
        let f = findings(&prior, &now, &Discovery::default());
        let paths: Vec<&str> = f.iter().filter_map(|f| f.path.as_deref()).collect();
        assert_eq!(paths, ["instance_type"]);
    }

    #[test]
    fn a_member_added_to_a_list_is_an_extra_member() {
        let subject = json!({"kind": "Group", "name": "slipway-deployers"});
        let stranger = json!({"kind": "User", "name": "mallory"});
        // As read back when the list grew: the server's defaults included.
        let defaulted = json!({"kind": "Group", "name": "slipway-deployers", "apiGroup": "rbac.authorization.k8s.io"});
        let prior: BTreeMap<_, _> = [state(
            "k8s.role_binding.ns/deployer",
            "ns/deployer",
            json!({"manifest": {"subjects": [subject]}}),
        )]
        .into();
        let now = [(
            a("k8s.role_binding.ns/deployer"),
            live(
                "ns/deployer",
                json!({"manifest": {"subjects": [stranger, defaulted]}}),
            ),
        )]
        .into();
        let f = findings(&prior, &now, &Discovery::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, FindingKind::Extra);
        assert_eq!(f[0].path.as_deref(), Some("manifest.subjects"));
        assert_eq!(f[0].live, Some(stranger));
    }

    #[test]
    fn deleted_extra_unmanaged_and_duplicates() {
        let prior: BTreeMap<_, _> = [
            state("aws.instance.master", "i-1", json!({})),
            state("aws.internet_gateway.main", "igw-1", json!({})),
            state("aws.security_group.master", "sg-1", json!({})),
        ]
        .into();
        let now = [
            (a("aws.instance.master"), live("i-1", json!({}))),
            (a("aws.internet_gateway.main"), None),
            (a("aws.security_group.master"), live("sg-1", json!({}))),
        ]
        .into();
        let tagged = |addr: &str, id: &str| Tagged {
            addr: a(addr),
            id: id.to_string(),
            claims_address: true,
        };
        let discovered = Discovery {
            tagged: vec![
                tagged("aws.instance.master", "i-2"),
                tagged("aws.subnet.stray", "subnet-9"),
                tagged("aws.vpc.twice", "vpc-8"),
                tagged("aws.vpc.twice", "vpc-9"),
            ],
            extras: vec![Extra {
                of: a("aws.security_group.master"),
                collection: "rules".to_string(),
                id: "sgr-9".to_string(),
                detail: json!({"from_port": 22}),
            }],
            controller: Vec::new(),
        };
        let f = findings(&prior, &now, &discovered);
        let kinds: Vec<(FindingKind, &str)> =
            f.iter().map(|f| (f.kind, f.address.name())).collect();
        assert_eq!(
            kinds,
            [
                (FindingKind::Duplicate, "master"),
                (FindingKind::Deleted, "main"),
                (FindingKind::Extra, "master"),
                (FindingKind::Unmanaged, "stray"),
                (FindingKind::Duplicate, "twice"),
            ]
        );
        assert_eq!(f[0].ids, ["i-1", "i-2"], "the tracked one first");
        assert_eq!(f[4].ids, ["vpc-8", "vpc-9"], "neither hides the other");
        assert_eq!(f[2].path.as_deref(), Some("rules"));
        let counts = Counts::of(&f);
        assert_eq!(counts.drifted(), 5);
        assert_eq!(
            counts.summary(),
            "1 deleted, 1 extra, 1 unmanaged, 2 duplicate"
        );
    }

    #[test]
    fn orphans_are_what_fronts_something_gone() {
        let made = |kind, name: &str, fronts| ControllerMade {
            kind,
            id: format!("arn:{name}"),
            name: name.to_string(),
            fronts,
        };
        let made = [
            made(
                "load_balancer",
                "k8s-gone",
                Some(Fronts::Ingress("ns/gone".into())),
            ),
            made(
                "load_balancer",
                "k8s-here",
                Some(Fronts::Ingress("ns/here".into())),
            ),
            made(
                "target_group",
                "k8s-grp",
                Some(Fronts::IngressGroup("shared".into())),
            ),
            made("security_group", "k8s-backend", None),
        ];
        let fronted = [Fronts::Ingress("ns/here".into())].into();
        let f = orphans(&made, &fronted);
        let names: Vec<String> = f.iter().map(|f| f.address.to_string()).collect();
        assert_eq!(
            names,
            ["aws.load_balancer.k8s-gone", "aws.target_group.k8s-grp"]
        );
        assert!(
            f[1].detail
                .as_deref()
                .unwrap()
                .contains("IngressGroup `shared`")
        );
    }
}
