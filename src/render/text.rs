//! Human-readable plans, drift reports and apply summaries.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::Value;

use super::{SENSITIVE, is_sensitive};
use crate::addr::Address;
use crate::apply::ApplyReport;
use crate::drift::{Counts, Finding, FindingKind};
use crate::plan::{Action, Change, Mode, Plan};
use crate::resource::Expr;
use crate::ui::{Paint, paint};

const UNKNOWN: &str = "(known after apply)";

/// A plan as `+`, `~`, `-/+`, `-` blocks and the summary line.
pub fn plan(plan: &Plan, color: bool) -> String {
    let mut s = String::new();
    if !plan.drift.is_empty() {
        s.push_str(&drift(&plan.drift, color));
        s.push('\n');
    }
    let changes: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .collect();
    if changes.is_empty() {
        s.push_str(&paint(color, Paint::Bold, "No changes."));
        s.push_str(match plan.mode {
            Mode::Apply => " The platform matches the stack.\n",
            Mode::Destroy { .. } => " Nothing to destroy.\n",
        });
        return s;
    }
    s.push_str("slipway will perform the following actions:\n\n");
    for c in changes {
        change(&mut s, c, color);
        s.push('\n');
    }
    let sum = plan.summary();
    let _ = writeln!(
        s,
        "{} {} to add, {} to change, {} to destroy.",
        paint(color, Paint::Bold, "Plan:"),
        sum.add,
        sum.change,
        sum.destroy
    );
    s
}

fn change(s: &mut String, c: &Change, color: bool) {
    let (sym, p, what) = match c.action {
        Action::Create => ("  +", Paint::Green, "will be created"),
        Action::Update => ("  ~", Paint::Yellow, "will be updated in place"),
        Action::Replace if c.create_before_destroy => (
            "+/-",
            Paint::Red,
            "must be replaced: the replacement is created first, then what uses it moves over, then the old one is destroyed",
        ),
        Action::Replace => ("-/+", Paint::Red, "must be replaced"),
        Action::Delete => ("  -", Paint::Red, "will be destroyed"),
        Action::NoOp => return,
    };
    let _ = writeln!(
        s,
        "  {} {} {what}",
        paint(color, Paint::Dim, "#"),
        paint(color, Paint::Bold, &c.addr.to_string())
    );
    let _ = writeln!(s, "{} {}", paint(color, p, sym), c.addr);
    if c.protected && matches!(c.action, Action::Delete | Action::Replace) {
        let _ = writeln!(
            s,
            "      {}",
            paint(
                color,
                Paint::Red,
                "# protected: applying this needs --allow-protected"
            )
        );
    }
    if let Some(container) = &c.replaced_with {
        let _ = writeln!(
            s,
            "      {}",
            paint(color, Paint::Red, &format!("# replaced with {container}"))
        );
    }
    let before = c.before.as_ref().map(|l| &l.attrs);
    match c.action {
        Action::Create => {
            let after = c.after.iter().flatten().collect::<Vec<_>>();
            let width = after.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, e) in after {
                let v = if is_sensitive(&c.addr, k) {
                    SENSITIVE.to_string()
                } else {
                    expr(e, 8)
                };
                let _ = writeln!(
                    s,
                    "      {} {k:width$} = {v}",
                    paint(color, Paint::Green, "+")
                );
            }
        }
        Action::Update | Action::Replace => {
            let width = c.changed.iter().map(String::len).max().unwrap_or(0);
            for k in &c.changed {
                let old = before.and_then(|b| b.get(k));
                let new = c.after.as_ref().and_then(|a| a.get(k));
                // `manifest/roleRef`: a part of the attribute forces it.
                let parts: Vec<&str> = c
                    .replace_because
                    .iter()
                    .filter_map(|r| r.strip_prefix(k.as_str()))
                    .filter_map(|rest| rest.strip_prefix('/'))
                    .collect();
                let forces = if c.replace_because.contains(k) {
                    paint(color, Paint::Red, " # forces replacement")
                } else if !parts.is_empty() {
                    paint(
                        color,
                        Paint::Red,
                        &format!(" # forces replacement: {}", parts.join(", ")),
                    )
                } else {
                    String::new()
                };
                if is_sensitive(&c.addr, k) {
                    let _ = writeln!(
                        s,
                        "      {} {k:width$} = {SENSITIVE}{forces}",
                        paint(color, Paint::Yellow, "~")
                    );
                    continue;
                }
                match (old, new.and_then(Expr::known)) {
                    (Some(Value::Object(o)), Some(Value::Object(n))) => {
                        let _ = writeln!(
                            s,
                            "      {} {k:width$} = {{{forces}",
                            paint(color, Paint::Yellow, "~")
                        );
                        let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
                        for key in keys {
                            match (o.get(key), n.get(key)) {
                                (Some(a), Some(b)) if a == b => {}
                                (Some(a), Some(b)) => {
                                    let _ = writeln!(
                                        s,
                                        "          {} {:?} = {} -> {}",
                                        paint(color, Paint::Yellow, "~"),
                                        key,
                                        value(a, 12),
                                        value(b, 12)
                                    );
                                }
                                (None, Some(b)) => {
                                    let _ = writeln!(
                                        s,
                                        "          {} {:?} = {}",
                                        paint(color, Paint::Green, "+"),
                                        key,
                                        value(b, 12)
                                    );
                                }
                                (Some(a), None) => {
                                    let _ = writeln!(
                                        s,
                                        "          {} {:?} = {}",
                                        paint(color, Paint::Red, "-"),
                                        key,
                                        value(a, 12)
                                    );
                                }
                                (None, None) => {}
                            }
                        }
                        let _ = writeln!(s, "        }}");
                    }
                    (Some(Value::String(o)), Some(Value::String(n)))
                        if o.contains('\n') || n.contains('\n') =>
                    {
                        // A script or document: only the lines that differ.
                        let _ = writeln!(
                            s,
                            "      {} {k:width$} = <<-{forces}",
                            paint(color, Paint::Yellow, "~")
                        );
                        for line in line_diff(o, &n, 1) {
                            let text = match line {
                                Line::Same(l) => format!("            {l}"),
                                Line::Gap => "            …".to_string(),
                                Line::Removed(l) => {
                                    format!("          {} {l}", paint(color, Paint::Red, "-"))
                                }
                                Line::Added(l) => {
                                    format!("          {} {l}", paint(color, Paint::Green, "+"))
                                }
                            };
                            let _ = writeln!(s, "{}", text.trim_end());
                        }
                    }
                    _ => {
                        let old = old
                            .map(|v| value(v, 8))
                            .unwrap_or_else(|| "null".to_string());
                        let new = new
                            .map(|e| expr(e, 8))
                            .unwrap_or_else(|| "null".to_string());
                        let _ = writeln!(
                            s,
                            "      {} {k:width$} = {old} -> {new}{forces}",
                            paint(color, Paint::Yellow, "~")
                        );
                    }
                }
            }
        }
        Action::Delete => {
            if let Some(l) = &c.before {
                let _ = writeln!(
                    s,
                    "      {} id = {}",
                    paint(color, Paint::Red, "-"),
                    value(&Value::String(l.id.clone()), 8)
                );
            }
        }
        Action::NoOp => {}
    }
}

/// A desired value, with unknown parts as `(known after apply)`.
/// One line of a [`line_diff`].
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    Same(&'a str),
    Removed(&'a str),
    Added(&'a str),
    /// Unchanged lines left out.
    Gap,
}

/// The lines of `old` and `new` that differ (by longest common
/// subsequence), each with `context` unchanged lines around it.
fn line_diff<'a>(old: &'a str, new: &'a str, context: usize) -> Vec<Line<'a>> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut all = Vec::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            all.push(Line::Same(a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            all.push(Line::Removed(a[i]));
            i += 1;
        } else {
            all.push(Line::Added(b[j]));
            j += 1;
        }
    }
    let changed: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, l)| !matches!(l, Line::Same(_)))
        .map(|(n, _)| n)
        .collect();
    let near = |n: usize| changed.iter().any(|&c| c.abs_diff(n) <= context);
    let mut out = Vec::new();
    for (n, line) in all.into_iter().enumerate() {
        if near(n) {
            out.push(line);
        } else if out.last() != Some(&Line::Gap) {
            out.push(Line::Gap);
        }
    }
    out
}

fn expr(e: &Expr, indent: usize) -> String {
    if let Some(v) = e.known() {
        return value(&v, indent);
    }
    let pad = " ".repeat(indent + 4);
    let end = " ".repeat(indent);
    match e {
        Expr::Ref(_) | Expr::Concat(_) | Expr::Lit(_) => UNKNOWN.to_string(),
        Expr::List(items) => {
            let inner: Vec<String> = items
                .iter()
                .map(|i| format!("{pad}{},", expr(i, indent + 4)))
                .collect();
            format!("[\n{}\n{end}]", inner.join("\n"))
        }
        Expr::Map(entries) => {
            let inner: Vec<String> = entries
                .iter()
                .map(|(k, v)| {
                    let key = match k.known() {
                        Some(Value::String(s)) => format!("{s:?}"),
                        _ => UNKNOWN.to_string(),
                    };
                    format!("{pad}{key} = {}", expr(v, indent + 4))
                })
                .collect();
            format!("{{\n{}\n{end}}}", inner.join("\n"))
        }
    }
}

/// A known value: scalars inline, small collections inline, larger ones indented.
fn value(v: &Value, indent: usize) -> String {
    let inline = v.to_string();
    if inline.len() <= 60 && !inline.contains('\n') {
        return inline;
    }
    let pad = " ".repeat(indent + 4);
    let end = " ".repeat(indent);
    match v {
        Value::Array(items) => {
            let inner: Vec<String> = items
                .iter()
                .map(|i| format!("{pad}{},", value(i, indent + 4)))
                .collect();
            format!("[\n{}\n{end}]", inner.join("\n"))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{pad}{k:?} = {}", value(v, indent + 4)))
                .collect();
            format!("{{\n{}\n{end}}}", inner.join("\n"))
        }
        Value::String(s) if s.contains('\n') => format!(
            "<<-EOT\n{}\n{end}EOT",
            s.lines()
                .map(|l| format!("{pad}{l}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        _ => inline,
    }
}

/// What changed outside slipway: findings grouped by address, accepted
/// (ignored) ones listed apart, and a count per kind.
pub fn drift(findings: &[Finding], color: bool) -> String {
    let (ignored, open): (Vec<&Finding>, Vec<&Finding>) =
        findings.iter().partition(|f| f.ignored());
    let counts = Counts::of(findings);
    let mut s = String::new();
    if open.is_empty() {
        s.push_str("No drift: every resource matches the last apply");
        if !ignored.is_empty() {
            let _ = write!(s, " ({} accepted difference(s) ignored)", ignored.len());
        }
        s.push_str(".\n");
    } else {
        let _ = writeln!(
            s,
            "{}\n",
            paint(
                color,
                Paint::Bold,
                "Objects have changed outside of slipway:"
            )
        );
        let mut last_modified: Option<&Address> = None;
        for f in &open {
            if f.kind != FindingKind::Modified {
                last_modified = None;
            }
            finding(&mut s, f, color, &mut last_modified);
        }
    }
    if !ignored.is_empty() {
        let _ = writeln!(s, "\nAccepted drift (ignored):");
        for f in &ignored {
            let at = f
                .path
                .as_deref()
                .map(|p| format!(":{p}"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  {}{at} {} (by `{}`)",
                f.address,
                f.kind.as_str(),
                f.ignored_by.as_deref().unwrap_or("?")
            );
        }
    }
    if !open.is_empty() || !ignored.is_empty() {
        let _ = writeln!(s, "\nDrift: {}.", counts.summary());
    }
    s
}

fn finding<'f>(
    s: &mut String,
    f: &'f Finding,
    color: bool,
    last_modified: &mut Option<&'f Address>,
) {
    let id = f.id.as_deref().unwrap_or("?");
    let shown = |v: &Option<Value>| {
        let attr = f
            .path
            .as_deref()
            .map(|p| p.split(['.', '[']).next().unwrap_or(p))
            .unwrap_or_default();
        match v {
            _ if is_sensitive(&f.address, attr) => SENSITIVE.to_string(),
            Some(v) => value(v, 8),
            None => "(absent)".to_string(),
        }
    };
    match f.kind {
        FindingKind::Modified => {
            if *last_modified != Some(&f.address) {
                let _ = writeln!(
                    s,
                    "  {} {} has changed",
                    paint(color, Paint::Yellow, "~"),
                    f.address
                );
            }
            let _ = writeln!(
                s,
                "      ~ {} = {} -> {}",
                f.path.as_deref().unwrap_or("?"),
                shown(&f.recorded),
                shown(&f.live)
            );
        }
        FindingKind::Deleted => {
            let _ = writeln!(
                s,
                "  {} {} has been deleted (was `{id}`)",
                paint(color, Paint::Red, "-"),
                f.address,
            );
        }
        FindingKind::Extra => {
            let member = shown(&f.live);
            let _ = writeln!(
                s,
                "  {} {} has a member in `{}` the stack does not declare: {member}",
                paint(color, Paint::Yellow, "+"),
                f.address,
                f.path.as_deref().unwrap_or("?"),
            );
        }
        FindingKind::Unmanaged => {
            let _ = writeln!(
                s,
                "  {} {} exists (`{id}`) and is tagged as this stack's, but the state does not know it",
                paint(color, Paint::Green, "+"),
                f.address,
            );
        }
        FindingKind::Duplicate => {
            let _ = writeln!(
                s,
                "  {} {} is claimed by {} objects (`{}`): {}",
                paint(color, Paint::Red, "!"),
                f.address,
                f.ids.len(),
                f.ids.join("`, `"),
                f.detail.as_deref().unwrap_or_default()
            );
        }
        FindingKind::Orphaned => {
            let _ = writeln!(
                s,
                "  {} {} (`{id}`) was {}",
                paint(color, Paint::Red, "?"),
                f.address,
                f.detail
                    .as_deref()
                    .unwrap_or("left by the load balancer controller"),
            );
        }
    }
    if f.kind == FindingKind::Modified {
        *last_modified = Some(&f.address);
    }
}

/// The end of an apply or destroy.
pub fn report(report: &ApplyReport, destroy: bool, color: bool) -> String {
    let mut s = String::new();
    let (mut add, mut change, mut gone) = (0, 0, 0);
    for (_, op) in &report.done {
        match op {
            crate::apply::Op::Create | crate::apply::Op::ReplaceCreate => add += 1,
            crate::apply::Op::Update => change += 1,
            crate::apply::Op::Delete | crate::apply::Op::ReplaceDelete => gone += 1,
        }
    }
    let what = if destroy { "Destroy" } else { "Apply" };
    for (a, w) in &report.warnings {
        let _ = writeln!(s, "{} {a}: {w}", paint(color, Paint::Yellow, "warning:"));
    }
    if report.success() {
        let _ = writeln!(
            s,
            "{} Resources: {add} added, {change} changed, {gone} destroyed.",
            paint(color, Paint::Green, &format!("{what} complete!"))
        );
        return s;
    }
    let _ = writeln!(
        s,
        "{} Resources: {add} added, {change} changed, {gone} destroyed; {} failed, {} skipped, {} not started.",
        paint(
            color,
            Paint::Red,
            &format!(
                "{what} {}.",
                if report.interrupted {
                    "interrupted"
                } else {
                    "failed"
                }
            )
        ),
        report.failed.len(),
        report.skipped.len(),
        report.not_started.len()
    );
    for f in &report.failed {
        let _ = writeln!(
            s,
            "  {} {} {}: {}",
            paint(color, Paint::Red, "✗"),
            f.op.verb(),
            f.addr,
            f.error
        );
    }
    let mut skipped: Vec<String> = report
        .skipped
        .iter()
        .map(|(a, op, because)| format!("  - {} {a} (skipped: `{because}` failed)", op.verb()))
        .collect();
    skipped.sort();
    for line in skipped {
        let _ = writeln!(s, "{line}");
    }
    if !report.not_started.is_empty() {
        let names: Vec<String> = report
            .not_started
            .iter()
            .map(|(a, _)| a.to_string())
            .collect();
        let _ = writeln!(s, "  not started: {}", names.join(", "));
    }
    for (a, op) in &report.abandoned {
        let _ = writeln!(
            s,
            "  {} {} {a}: abandoned while in flight; the next plan reads what it became",
            paint(color, Paint::Yellow, "?"),
            op.verb()
        );
    }
    s
}

/// Addresses in a list, for messages.
pub fn addresses(addrs: &[Address]) -> String {
    addrs
        .iter()
        .map(|a| format!("`{a}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::plan::StackRef;
    use crate::resource::Live;

    fn a(s: &str) -> Address {
        s.parse().unwrap()
    }

    fn live(id: &str, attrs: Value) -> Option<Live> {
        Some(Live {
            id: id.into(),
            attrs: serde_json::from_value(attrs).unwrap(),
        })
    }

    fn change(addr: &str, action: Action) -> Change {
        Change {
            addr: a(addr),
            action,
            before: None,
            after: None,
            changed: vec![],
            replace_because: vec![],
            depends_on: Default::default(),
            prior_depends_on: Default::default(),
            replaced_with: None,
            protected: false,
            create_before_destroy: false,
            env: None,
            serial_group: None,
        }
    }

    fn sample() -> Plan {
        let subnet = a("aws.subnet.public_a");
        let mut create = change("aws.subnet.public_a", Action::Create);
        create.after = Some(BTreeMap::from([
            ("cidr_block".to_string(), Expr::str("10.0.0.0/20")),
            (
                "vpc_id".to_string(),
                Expr::reference(&a("aws.vpc.main"), "id"),
            ),
            ("id".to_string(), Expr::reference(&subnet, "id")),
            (
                "tags".to_string(),
                Expr::map([
                    ("Name", Expr::str("smallcase-public-a")),
                    ("slipway:address", Expr::str("aws.subnet.public_a")),
                ]),
            ),
        ]));
        let mut update = change("aws.vpc.main", Action::Update);
        update.before = live(
            "vpc-1",
            json!({"tags": {"Name": "old", "team": "x"}, "enable_dns_hostnames": false}),
        );
        update.after = Some(BTreeMap::from([
            (
                "tags".to_string(),
                Expr::Lit(json!({"Name": "new", "env": "prod"})),
            ),
            ("enable_dns_hostnames".to_string(), Expr::Lit(json!(true))),
        ]));
        update.changed = vec!["enable_dns_hostnames".into(), "tags".into()];
        let mut replace = change("aws.instance.jenkins_master", Action::Replace);
        replace.before = live(
            "i-1",
            json!({"instance_type": "t3.medium", "subnet_id": "subnet-1"}),
        );
        replace.after = Some(BTreeMap::from([
            ("instance_type".to_string(), Expr::str("t3.large")),
            ("subnet_id".to_string(), Expr::reference(&subnet, "id")),
        ]));
        replace.changed = vec!["instance_type".into(), "subnet_id".into()];
        replace.replace_because = vec!["subnet_id".into()];
        let mut delete = change("k8s.namespace.old", Action::Delete);
        delete.before = live("old", json!({}));
        let mut cert = change("tls.certificate.lb_webhook", Action::Create);
        cert.after = Some(BTreeMap::from([(
            "key_pem".to_string(),
            Expr::str("secret"),
        )]));
        Plan {
            format_version: 1,
            id: "id".into(),
            created_at: "t".into(),
            slipway_version: "0".into(),
            stack: StackRef {
                name: "s".into(),
                path: "stacks/s.toml".into(),
                sha256: "x".into(),
            },
            mode: Mode::Apply,
            state_lineage: None,
            state_serial: None,
            refreshed: BTreeMap::new(),
            changes: vec![
                create,
                update,
                replace,
                delete,
                cert,
                change("aws.vpc.same", Action::NoOp),
            ],
            drift: vec![Finding {
                kind: FindingKind::Modified,
                address: a("aws.vpc.main"),
                id: Some("vpc-1".into()),
                path: Some("enable_dns_hostnames".into()),
                recorded: Some(json!(true)),
                live: Some(json!(false)),
                ids: Vec::new(),
                detail: None,
                ignored_by: None,
            }],
        }
    }

    #[test]
    fn a_changed_script_shows_only_its_changed_lines() {
        let old = "a\nb\nc\nd\ne\nf\ng\n";
        let new = "a\nb\nc\nD\ne\nf\ng\nh\n";
        assert_eq!(
            line_diff(old, new, 1),
            vec![
                Line::Gap,
                Line::Same("c"),
                Line::Removed("d"),
                Line::Added("D"),
                Line::Same("e"),
                Line::Gap,
                Line::Same("g"),
                Line::Added("h"),
            ]
        );
        assert!(line_diff("x\ny", "x\ny", 1).iter().all(|l| *l == Line::Gap));
    }

    #[test]
    fn renders_every_action() {
        insta::assert_snapshot!(plan(&sample(), false));
    }

    #[test]
    fn a_part_of_an_attribute_that_forces_replacement_is_named() {
        let mut p = sample();
        let mut binding = change("k8s.role_binding.ns/deployer", Action::Replace);
        binding.before = live(
            "ns/deployer",
            json!({"manifest": {"roleRef": {"name": "a"}}}),
        );
        binding.after = Some(BTreeMap::from([(
            "manifest".to_string(),
            Expr::Lit(json!({"roleRef": {"name": "b"}})),
        )]));
        binding.changed = vec!["manifest".into()];
        binding.replace_because = vec!["manifest/roleRef".into()];
        p.changes = vec![binding];
        let text = plan(&p, false);
        assert!(text.contains("-/+ k8s.role_binding.ns/deployer"), "{text}");
        assert!(text.contains("# forces replacement: roleRef"), "{text}");
    }

    #[test]
    fn colour_only_when_asked() {
        assert!(!plan(&sample(), false).contains('\u{1b}'));
        assert!(plan(&sample(), true).contains("\u{1b}[32m+\u{1b}[0m"));
    }

    #[test]
    fn secrets_are_never_printed() {
        let text = plan(&sample(), false);
        assert!(!text.contains("secret"));
        assert!(text.contains(SENSITIVE));
    }

    #[test]
    fn json_marks_unknowns_and_redacts() {
        let doc = super::super::json::plan(&sample());
        let create = &doc["changes"][0];
        assert_eq!(create["after"]["vpc_id"], Value::Null);
        assert_eq!(create["after_unknown"], json!(["id", "vpc_id"]));
        assert_eq!(doc["changes"][4]["after"]["key_pem"], json!(SENSITIVE));
        assert_eq!(doc["summary"], json!({"add": 3, "change": 1, "destroy": 2}));
    }
}
