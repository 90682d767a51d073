//! The reliability suite's quick tier (docs/reliability.md): bad input —
//! stack files, saved plans and state files, mutated at random with
//! proptest — secrets in output, plan files and the state, and least
//! privilege in the IAM policies and security group rules a stack produces.
//!
//! `SLIPWAY_RELIABILITY_CASES` sets how many cases each property test runs
//! in-process (default 256); `slipway validate` runs a quarter of that, and
//! the tests that apply or plan for every case a sixteenth (at least 16).
//! The long tier sets it high. One test drives the real providers against
//! the local AWS and the Kubernetes test server, in both tiers.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use common::{Project, Run};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use slipway::stack::{Stack, StackError};
use slipway::state::{LocalBackend, State};

// ---------------------------------------------------------------------------
// Case counts

/// The environment variable the long tier sets.
const CASES_VAR: &str = "SLIPWAY_RELIABILITY_CASES";

/// Cases of an in-process property.
fn cases() -> u32 {
    std::env::var(CASES_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(256)
}

/// Cases of a property that runs the binary once per case.
fn binary_cases() -> u32 {
    (cases() / 16).max(16)
}

/// Runs `test` over `cases` values of `strategy`; a failure panics with
/// the smallest failing value proptest found (and its seed: rerun with
/// `PROPTEST_RNG_SEED`).
fn check_property<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 128,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn reference_text() -> String {
    std::fs::read_to_string(root().join("stacks/smallcase.toml")).unwrap()
}

fn dump(run: &Run) -> String {
    format!(
        "$ {}\nexit {}\n--- stdout\n{}\n--- stderr\n{}",
        run.cmd, run.code, run.stdout, run.stderr
    )
}

/// No panic, no crash: slipway exits 0, 1, 2 or 130, and says nothing of a panic.
fn no_panic(run: &Run) -> Result<(), TestCaseError> {
    prop_assert!(
        [0, 1, 2, 130].contains(&run.code)
            && !run.stderr.contains("panicked")
            && !run.stdout.contains("panicked"),
        "slipway crashed\n{}",
        dump(run)
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 4. Bad input: stack files

/// One change to a stack file's bytes.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLines {
        at: usize,
        count: usize,
    },
    Truncate {
        at: usize,
    },
    DuplicateLine {
        at: usize,
    },
    SwapLines {
        a: usize,
        b: usize,
    },
    /// The value of a `key = value` line replaced.
    Value {
        at: usize,
        value: &'static str,
    },
    UnknownKey {
        at: usize,
        key: String,
    },
    InsertBytes {
        at: usize,
        bytes: Vec<u8>,
    },
    ReplaceByte {
        at: usize,
        byte: u8,
    },
}

/// Values of the wrong type for some keys, or out of range, or odd.
const VALUES: &[&str] = &[
    "42",
    "-1",
    "0",
    "99999999999999999999",
    "3.5",
    "nan",
    "inf",
    "true",
    "\"\"",
    "\"x\"",
    "\"0.0.0.0/0\"",
    "\"../../etc\"",
    "[]",
    "[1, \"a\"]",
    "[\"10.0.0.0/8\", \"10.0.0.0/8\"]",
    "{ zz_unknown = 1 }",
    "{}",
    "1979-05-27T07:32:00Z",
    "'''multi\nline'''",
    "\"\\u0000\"",
    "\"ü日本\"",
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1..4usize).prop_map(|(at, count)| Edit::DeleteLines { at, count }),
        any::<usize>().prop_map(|at| Edit::Truncate { at }),
        any::<usize>().prop_map(|at| Edit::DuplicateLine { at }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines { a, b }),
        (any::<usize>(), prop::sample::select(VALUES))
            .prop_map(|(at, value)| Edit::Value { at, value }),
        (any::<usize>(), "zz_[a-z_]{1,10}").prop_map(|(at, key)| Edit::UnknownKey { at, key }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(at, bytes)| Edit::InsertBytes { at, bytes }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::ReplaceByte { at, byte }),
    ]
}

fn split_lines(text: &[u8]) -> Vec<Vec<u8>> {
    text.split(|c| *c == b'\n').map(<[u8]>::to_vec).collect()
}

fn join_lines(lines: &[Vec<u8>]) -> Vec<u8> {
    lines.join(&b'\n')
}

/// `key = value` lines (not comments, not table headers).
fn is_assignment(line: &[u8]) -> bool {
    let l = String::from_utf8_lossy(line);
    let l = l.trim();
    !l.is_empty() && !l.starts_with('#') && !l.starts_with('[') && l.contains('=')
}

fn apply_edit(text: &[u8], e: &Edit) -> Vec<u8> {
    let mut lines = split_lines(text);
    let n = lines.len();
    match e {
        Edit::DeleteLines { at, count } => {
            let i = at % n;
            lines.drain(i..(i + count).min(n));
            join_lines(&lines)
        }
        Edit::Truncate { at } => text[..at % (text.len() + 1)].to_vec(),
        Edit::DuplicateLine { at } => {
            let i = at % n;
            let copy = lines[i].clone();
            lines.insert(i, copy);
            join_lines(&lines)
        }
        Edit::SwapLines { a, b } => {
            lines.swap(a % n, b % n);
            join_lines(&lines)
        }
        Edit::Value { at, value } => {
            let keys: Vec<usize> = (0..n).filter(|i| is_assignment(&lines[*i])).collect();
            if let Some(&i) = keys.get(at % keys.len().max(1)) {
                let line = String::from_utf8_lossy(&lines[i]).into_owned();
                if let Some((key, _)) = line.split_once('=') {
                    lines[i] = format!("{key}= {value}").into_bytes();
                }
            }
            join_lines(&lines)
        }
        Edit::UnknownKey { at, key } => {
            lines.insert(at % (n + 1), format!("{key} = 1").into_bytes());
            join_lines(&lines)
        }
        Edit::InsertBytes { at, bytes } => {
            let at = at % (text.len() + 1);
            let mut out = text[..at].to_vec();
            out.extend_from_slice(bytes);
            out.extend_from_slice(&text[at..]);
            out
        }
        Edit::ReplaceByte { at, byte } => {
            let mut out = text.to_vec();
            if !out.is_empty() {
                let i = at % out.len();
                out[i] = *byte;
            }
            out
        }
    }
}

/// Loads `bytes` as the project's stack file and checks what a user
/// relies on: no panic; a refusal names the file, a line that exists and
/// a column, says what is wrong on one line and what to do; a stack that
/// validates expands into a resource graph.
fn load_and_check(path: &Path, bytes: &[u8]) -> Result<Result<(), StackError>, TestCaseError> {
    std::fs::write(path, bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    match Stack::load(path) {
        Ok(stack) => {
            let desired = stack.desired();
            prop_assert!(
                desired.is_ok(),
                "a stack that validates must expand: {:?}\n{}",
                desired.err(),
                String::from_utf8_lossy(bytes)
            );
            Ok(Ok(()))
        }
        Err(e) => {
            check_diagnostics(path, bytes, &e)?;
            Ok(Err(e))
        }
    }
}

fn check_diagnostics(path: &Path, bytes: &[u8], e: &StackError) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(bytes);
    let lines = text.matches('\n').count() + 1;
    let shown = e.to_string();
    prop_assert!(!e.diagnostics().is_empty(), "an error with nothing in it");
    for d in e.diagnostics() {
        prop_assert_eq!(&d.file, path);
        prop_assert!(
            (1..=lines).contains(&d.line) && d.column >= 1,
            "{d}: position outside the file ({lines} lines)"
        );
        prop_assert!(
            !d.message.trim().is_empty() && !d.message.contains('\n'),
            "message must be one line: {:?}",
            d.message
        );
        prop_assert!(
            d.hint.as_deref().is_some_and(|h| !h.trim().is_empty()),
            "no hint saying what to do: {d}"
        );
        let at = format!("{}:{}:{}: ", path.display(), d.line, d.column);
        prop_assert!(shown.contains(&at), "{shown}");
    }
    Ok(())
}

fn at_line(e: &StackError, line: usize) -> bool {
    e.diagnostics().iter().any(|d| d.line == line)
}

#[test]
fn every_single_line_edit_of_the_reference_stack_is_refused_clearly_or_harmless() {
    let p = Project::reference();
    let path = p.path("stacks/smallcase.toml");
    let text = reference_text().into_bytes();
    let lines = split_lines(&text);
    let first_table = lines
        .iter()
        .position(|l| l.starts_with(b"["))
        .expect("the reference stack has tables");
    let refused = |edited: &[u8], what: &str| -> StackError {
        match load_and_check(&path, edited) {
            Ok(Err(e)) => e,
            Ok(Ok(())) => panic!("{what} was accepted:\n{}", String::from_utf8_lossy(edited)),
            Err(e) => panic!("{what}: {e}"),
        }
    };
    for (i, line) in lines.iter().enumerate() {
        let shown = String::from_utf8_lossy(line).into_owned();
        let trimmed = shown.trim();
        let table = trimmed.starts_with('[');
        // Whatever deleting a line or cutting the file after it does, the
        // outcome is clear.
        for edited in [
            apply_edit(&text, &Edit::DeleteLines { at: i, count: 1 }),
            join_lines(&lines[..=i]),
        ] {
            if let Err(e) = load_and_check(&path, &edited) {
                panic!("line {} deleted or the file cut after it: {e}", i + 1);
            }
        }
        // A key or table written twice is refused at its second occurrence.
        if is_assignment(line) || table {
            let e = refused(
                &apply_edit(&text, &Edit::DuplicateLine { at: i }),
                &format!("line {} twice", i + 1),
            );
            assert!(
                at_line(&e, i + 2) && e.to_string().contains("duplicate"),
                "line {} twice: {e}",
                i + 1
            );
        }
        // A value of a type no key takes is refused where it is written.
        if is_assignment(line) {
            for value in ["1979-05-27T07:32:00Z", "{ zz_unknown = 1 }"] {
                let e = refused(
                    &apply_edit(
                        &text,
                        &Edit::Value {
                            at: lines[..i].iter().filter(|l| is_assignment(l)).count(),
                            value,
                        },
                    ),
                    &format!("`{trimmed}` set to {value}"),
                );
                assert!(at_line(&e, i + 1), "`{trimmed}` set to {value}: {e}");
            }
        }
        // An unknown key is refused, by name, where it is.
        if i >= first_table {
            let e = refused(
                &apply_edit(
                    &text,
                    &Edit::UnknownKey {
                        at: i + 1,
                        key: "zz_unknown".into(),
                    },
                ),
                &format!("an unknown key after line {}", i + 1),
            );
            assert!(
                at_line(&e, i + 2) && e.to_string().contains("zz_unknown"),
                "unknown key after line {}: {e}",
                i + 1
            );
        }
    }
    // The file as it is validates: the checks above are about the edits.
    assert!(matches!(load_and_check(&path, &text), Ok(Ok(()))));
}

#[test]
fn mutated_stack_files_never_panic_and_every_error_says_where_and_what_to_do() {
    let p = Project::reference();
    let path = p.path("stacks/smallcase.toml");
    let text = reference_text().into_bytes();
    check_property(cases(), prop::collection::vec(edit(), 1..5), |edits| {
        let edited = edits.iter().fold(text.clone(), |t, e| apply_edit(&t, e));
        load_and_check(&path, &edited).map(|_| ())
    });
}

#[test]
fn slipway_validate_agrees_with_the_parser_on_mutated_stack_files() {
    let p = Project::reference();
    let path = p.path("stacks/smallcase.toml");
    let text = reference_text().into_bytes();
    // `validate` is quick: a quarter of the in-process cases.
    check_property(
        (cases() / 4).max(16),
        prop::collection::vec(edit(), 1..4),
        |edits| {
            let edited = edits.iter().fold(text.clone(), |t, e| apply_edit(&t, e));
            let parsed = load_and_check(&path, &edited)?;
            let run = p.run(&["validate"]);
            no_panic(&run)?;
            match parsed {
                Ok(()) => prop_assert_eq!(run.code, 0, "{}", dump(&run)),
                Err(e) => {
                    prop_assert_eq!(run.code, 1, "{}", dump(&run));
                    let first = &e.diagnostics()[0];
                    prop_assert!(
                        run.stderr.contains(&format!(
                            "stacks/smallcase.toml:{}:{}: ",
                            first.line, first.column
                        )) && run.stderr.contains("hint: "),
                        "{}",
                        dump(&run)
                    );
                }
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// 4. Bad input: saved plans and state files (through the binary)

/// What a run must leave alone when it refuses its input.
struct Snapshot {
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl Snapshot {
    fn take(p: &Project, rel: &[&str]) -> Snapshot {
        Snapshot {
            files: rel
                .iter()
                .map(|r| {
                    let path = p.path(r);
                    let bytes = std::fs::read(&path).ok();
                    (path, bytes)
                })
                .collect(),
        }
    }

    fn restore(&self) {
        for (path, bytes) in &self.files {
            match bytes {
                Some(b) => std::fs::write(path, b).unwrap(),
                None => {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }

    /// Which of the files differ from the snapshot.
    fn changed(&self) -> Vec<String> {
        self.files
            .iter()
            .filter(|(path, bytes)| std::fs::read(path).ok() != *bytes)
            .map(|(path, _)| path.display().to_string())
            .collect()
    }
}

/// An applied reference project with an empty call log.
fn applied() -> Project {
    let p = Project::reference();
    p.run(&["apply", "--auto-approve"]).success();
    p.edit_world(|w| w["calls"] = json!([]));
    p
}

/// Files in `state/` besides the state and its backup (a lock, a temp file).
fn strays(p: &Project) -> Vec<String> {
    std::fs::read_dir(p.path("state"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "smallcase.json" && n != "smallcase.json.backup")
                .collect()
        })
        .unwrap_or_default()
}

/// A change to a JSON document, at the n-th node in document order.
#[derive(Debug, Clone)]
enum JsonEdit {
    Remove(usize),
    Replace(usize, Value),
}

fn wrong_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(true)),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        Just(json!(1.5)),
        Just(json!("")),
        Just(json!("(garbled)")),
        Just(json!([])),
        Just(json!({})),
        Just(json!({"lit": 1})),
        Just(json!("aws.vpc.other")),
    ]
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        any::<usize>().prop_map(JsonEdit::Remove),
        (any::<usize>(), wrong_value()).prop_map(|(n, v)| JsonEdit::Replace(n, v)),
    ]
}

/// Every node's path below the root, in document order.
fn node_paths(v: &Value, here: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                here.push(json!(k));
                out.push(here.clone());
                node_paths(child, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                here.push(json!(i));
                out.push(here.clone());
                node_paths(child, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn apply_json_edit(doc: &Value, e: &JsonEdit) -> Value {
    let mut doc = doc.clone();
    let mut paths = Vec::new();
    node_paths(&doc, &mut Vec::new(), &mut paths);
    let n = match e {
        JsonEdit::Remove(n) | JsonEdit::Replace(n, _) => *n,
    };
    let Some(path) = paths.get(n % paths.len().max(1)) else {
        return doc;
    };
    let (last, parents) = path.split_last().unwrap();
    let mut node = &mut doc;
    for seg in parents {
        node = match seg {
            Value::String(k) => &mut node[k.as_str()],
            _ => &mut node[seg.as_u64().unwrap() as usize],
        };
    }
    match (e, last, node) {
        (JsonEdit::Remove(_), Value::String(k), Value::Object(m)) => {
            m.remove(k);
        }
        (JsonEdit::Remove(_), i, Value::Array(a)) => {
            a.remove(i.as_u64().unwrap() as usize);
        }
        (JsonEdit::Replace(_, v), Value::String(k), Value::Object(m)) => {
            m.insert(k.clone(), v.clone());
        }
        (JsonEdit::Replace(_, v), i, Value::Array(a)) => {
            a[i.as_u64().unwrap() as usize] = v.clone();
        }
        _ => {}
    }
    doc
}

/// A damaged file, and whether slipway must refuse it whatever else.
#[derive(Debug, Clone)]
enum Damage {
    /// Cut before its last closing brace.
    Truncate(usize),
    /// Bytes that are not UTF-8 put in.
    NotUtf8(usize),
    InsertBytes(usize, Vec<u8>),
    FlipByte(usize, u8),
    Json(Vec<JsonEdit>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<usize>().prop_map(Damage::Truncate),
        any::<usize>().prop_map(Damage::NotUtf8),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, b)| Damage::InsertBytes(at, b)),
        (any::<usize>(), 1..=255u8).prop_map(|(at, b)| Damage::FlipByte(at, b)),
        prop::collection::vec(json_edit(), 1..3).prop_map(Damage::Json),
    ]
}

fn apply_damage(text: &[u8], d: &Damage) -> Vec<u8> {
    let end = text.iter().rposition(|c| *c == b'}').unwrap_or(text.len());
    match d {
        Damage::Truncate(at) => text[..at % end.max(1)].to_vec(),
        Damage::NotUtf8(at) => {
            let at = at % (text.len() + 1);
            [&text[..at], &[0xff, 0xfe][..], &text[at..]].concat()
        }
        Damage::InsertBytes(at, bytes) => {
            let at = at % (text.len() + 1);
            [&text[..at], &bytes[..], &text[at..]].concat()
        }
        Damage::FlipByte(at, x) => {
            let mut out = text.to_vec();
            let i = at % out.len();
            out[i] ^= x;
            out
        }
        Damage::Json(edits) => {
            let doc: Value = serde_json::from_slice(text).unwrap();
            let doc = edits.iter().fold(doc, |d, e| apply_json_edit(&d, e));
            serde_json::to_vec_pretty(&doc).unwrap()
        }
    }
}

/// Damage slipway must refuse, whatever it hits.
fn always_refused(d: &Damage) -> bool {
    matches!(d, Damage::Truncate(_) | Damage::NotUtf8(_))
}

#[test]
fn a_damaged_saved_plan_is_refused_naming_it_and_changes_nothing() {
    let p = applied();
    p.edit_stack("keep_images  = 30", "keep_images  = 10");
    p.run(&["plan", "--out", "saved.json"]).success();
    let plan_bytes = std::fs::read(p.path("saved.json")).unwrap();
    let plan: Value = serde_json::from_slice(&plan_bytes).unwrap();
    let serial = plan["state_serial"].as_u64().unwrap();
    let snapshot = Snapshot::take(
        &p,
        &[
            "state/smallcase.json",
            "state/smallcase.json.backup",
            "cloud.json",
        ],
    );
    // Edits the checks of a saved plan must catch, each alone.
    let refused_edits: Vec<(&str, Value)> = vec![
        ("/format_version", json!(2)),
        ("/format_version", json!("3")),
        ("/format_version", Value::Null),
        ("/stack/sha256", json!("0".repeat(64))),
        ("/stack/name", json!("othercase")),
        ("/state_serial", json!(serial + 1)),
        ("/state_serial", json!(serial - 1)),
        (
            "/state_lineage",
            json!("00000000-0000-0000-0000-000000000000"),
        ),
        ("/changes", json!({})),
        ("/changes", Value::Null),
        ("/refreshed", json!([])),
        ("/mode", json!({"kind": "explode"})),
        ("/changes/0/action", json!("explode")),
        ("/changes/0/addr", json!("not an address")),
    ];
    let check = |bytes: &[u8], must_refuse: bool, what: &str| -> Result<(), TestCaseError> {
        snapshot.restore();
        std::fs::write(p.path("plan.json"), bytes).unwrap();
        let run = p.run(&["apply", "plan.json"]);
        no_panic(&run)?;
        let named = run.stderr.contains("plan.json");
        if must_refuse || named {
            prop_assert!(
                run.code == 1 && named && run.stderr.contains("hint: "),
                "{what}: not refused clearly\n{}",
                dump(&run)
            );
            prop_assert_eq!(snapshot.changed(), Vec::<String>::new(), "{}", what);
            prop_assert_eq!(p.mutating_calls(), 0, "{}", what);
            prop_assert_eq!(strays(&p), Vec::<String>::new(), "{}", what);
        } else {
            // Accepted: a saved plan is trusted as written (it is the
            // reviewed artefact); the state it leaves must still be whole.
            let text = std::fs::read_to_string(p.state_path()).unwrap();
            prop_assert!(
                State::from_json(&text, &p.state_path()).is_ok(),
                "{what}: torn state"
            );
        }
        Ok(())
    };
    for (pointer, value) in &refused_edits {
        let mut doc = plan.clone();
        *doc.pointer_mut(pointer).unwrap() = value.clone();
        check(
            &serde_json::to_vec_pretty(&doc).unwrap(),
            true,
            &format!("{pointer} = {value}"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    for key in ["changes", "refreshed", "stack", "mode", "format_version"] {
        let mut doc = plan.clone();
        doc.as_object_mut().unwrap().remove(key);
        check(
            &serde_json::to_vec_pretty(&doc).unwrap(),
            true,
            &format!("no {key}"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    check_property(binary_cases(), damage(), |d| {
        let bytes = apply_damage(&plan_bytes, &d);
        check(&bytes, always_refused(&d), &format!("{d:?}"))
    });
    // The plan itself was fine all along.
    snapshot.restore();
    p.run(&["apply", "saved.json"])
        .success()
        .stdout_has("Apply complete!");
}

/// The commands that read the state, with whether they print text (and so
/// a hint) on failure.
const STATE_COMMANDS: &[&[&str]] = &[
    &["plan"],
    &["plan", "--out", "p.json"],
    &["apply", "--auto-approve"],
    &["drift"],
    &["destroy", "--env", "develop", "--auto-approve"],
    &["destroy", "--auto-approve", "--allow-protected"],
    &["state", "list"],
    &["state", "show", "aws.vpc.main"],
    &["state", "rm", "aws.vpc.main"],
    &["import", "aws.vpc.main", "vpc-0001"],
];

#[test]
fn a_damaged_state_file_is_refused_by_every_command_and_never_overwritten() {
    let p = applied();
    // A backup exists, and must survive.
    p.edit_stack("keep_images  = 30", "keep_images  = 10");
    p.run(&["apply", "--auto-approve"]).success();
    p.edit_world(|w| w["calls"] = json!([]));
    let state_bytes = std::fs::read(p.state_path()).unwrap();
    let snapshot = Snapshot::take(
        &p,
        &[
            "state/smallcase.json",
            "state/smallcase.json.backup",
            "cloud.json",
            "p.json",
        ],
    );
    let state_path = p.state_path();
    check_property(
        binary_cases(),
        (damage(), prop::sample::select(STATE_COMMANDS)),
        |(d, args)| {
            snapshot.restore();
            let damaged = apply_damage(&state_bytes, &d);
            std::fs::write(&state_path, &damaged).unwrap();
            let damaged_snapshot = Snapshot::take(
                &p,
                &[
                    "state/smallcase.json",
                    "state/smallcase.json.backup",
                    "cloud.json",
                    "p.json",
                ],
            );
            let refused = match std::str::from_utf8(&damaged) {
                Ok(text) => State::from_json(text, &state_path).is_err(),
                Err(_) => true,
            };
            if always_refused(&d) {
                prop_assert!(refused, "slipway's parser accepted {d:?}");
            }
            let run = p.run(args);
            no_panic(&run)?;
            if refused {
                prop_assert!(
                    run.code == 1
                        && run.stderr.contains("state/smallcase.json")
                        && run.stderr.contains("hint: "),
                    "not refused clearly\n{}",
                    dump(&run)
                );
                prop_assert_eq!(damaged_snapshot.changed(), Vec::<String>::new());
                prop_assert_eq!(p.mutating_calls(), 0);
                prop_assert_eq!(strays(&p), Vec::<String>::new());
            } else if let Ok(text) = std::fs::read_to_string(&state_path) {
                // Still a state slipway reads: whatever the run did, the
                // file it left is whole or untouched.
                prop_assert!(
                    State::from_json(&text, &state_path).is_ok()
                        || text.as_bytes() == damaged.as_slice(),
                    "torn state after\n{}",
                    dump(&run)
                );
            }
            Ok(())
        },
    );
}

#[test]
fn a_damaged_state_file_is_refused_in_process_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/smallcase.json");
    let backend = LocalBackend::new(&path);
    // A state with something in it, and a backup.
    let p = applied();
    let good = std::fs::read(p.state_path()).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(backend.backup_path(), b"the previous version").unwrap();
    check_property(cases(), damage(), |d| {
        let damaged = apply_damage(&good, &d);
        std::fs::write(&path, &damaged).unwrap();
        let Err(e) = backend.load_opt("smallcase") else {
            prop_assert!(!always_refused(&d), "accepted {d:?}");
            return Ok(());
        };
        let shown = e.to_string();
        prop_assert!(shown.contains(&path.display().to_string()), "{shown}");
        prop_assert!(
            e.hint().is_some_and(|h| h.contains(".backup")),
            "{shown}: {:?}",
            e.hint()
        );
        // A write does not go over it either.
        let mut fresh = State::new("smallcase");
        prop_assert!(backend.write(&mut fresh).is_err());
        prop_assert_eq!(std::fs::read(&path).unwrap(), damaged);
        prop_assert_eq!(
            std::fs::read(backend.backup_path()).unwrap(),
            b"the previous version".to_vec()
        );
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// 5. Secrets

const SECRET_ACCESS_KEY: &str = "SENTINELsecretACCESSkey0123456789abcdefXYZ";
const SESSION_TOKEN: &str = "SENTINELsessionTOKEN0123456789abcdefXYZ";
const PROXY_PASSWORD: &str = "SENTINELproxyPASSWORD";
const TLS_KEY_BODY: &str = "SENTINELtlsPRIVATEkey";
const JENKINS_PASSWORD: &str = "SENTINELjenkinsPASSWORD";

fn tls_key_pem() -> String {
    format!("-----BEGIN PRIVATE KEY-----\nMIIEv{TLS_KEY_BODY}QEFAASC\n-----END PRIVATE KEY-----\n")
}

fn ca_key_pem() -> String {
    format!(
        "-----BEGIN EC PRIVATE KEY-----\nMHcC{TLS_KEY_BODY}AQEEI\n-----END EC PRIVATE KEY-----\n"
    )
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Every secret that might leak, as it would appear.
fn secrets() -> Vec<String> {
    vec![
        SECRET_ACCESS_KEY.into(),
        SESSION_TOKEN.into(),
        PROXY_PASSWORD.into(),
        JENKINS_PASSWORD.into(),
        TLS_KEY_BODY.into(),
        b64(&tls_key_pem()),
        b64(&ca_key_pem()),
        // Any private key in PEM, and the simulated cloud's own secret values.
        "PRIVATE KEY-----".into(),
        "key_pem-of-".into(),
        "key_pem_base64-of-".into(),
        // Kubernetes bearer tokens for EKS.
        "k8s-aws-v1.".into(),
    ]
}

/// The secrets in `text`: the list above, and anything shaped like an ECR
/// authorization token (base64 of `AWS:` and a long password).
fn leaks(text: &str) -> Vec<String> {
    let mut found: Vec<String> = secrets()
        .into_iter()
        .filter(|s| text.contains(s.as_str()))
        .collect();
    let ecr = regex_lite::Regex::new(r"QVdTO[A-Za-z0-9+/=]{100,}").unwrap();
    if let Some(m) = ecr.find(text) {
        found.push(format!("an ECR token: {}…", &m.as_str()[..20]));
    }
    found
}

#[track_caller]
fn assert_clean(what: &str, text: &str) {
    let found = leaks(text);
    assert!(found.is_empty(), "{what} holds secrets {found:?}");
}

#[track_caller]
fn assert_run_clean(run: &Run) {
    let found = leaks(&format!("{}\n{}", run.stdout, run.stderr));
    assert!(
        found.is_empty(),
        "output holds secrets {found:?}\n{}",
        dump(run)
    );
}

/// Credentials slipway's environment could hold.
fn with_credentials(p: &mut Project) {
    p.env.extend([
        ("AWS_ACCESS_KEY_ID", "AKIASENTINELKEYID0000".to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_string()),
        ("AWS_SESSION_TOKEN", SESSION_TOKEN.to_string()),
        ("JENKINS_PASSWORD", JENKINS_PASSWORD.to_string()),
        (
            "HTTPS_PROXY",
            format!("http://proxy-user:{PROXY_PASSWORD}@127.0.0.1:9"),
        ),
        ("NO_PROXY", "*".to_string()),
    ]);
}

/// The state without the attributes the kind catalog marks sensitive:
/// what `state show` and every renderer may show.
fn readable_state(text: &str) -> String {
    let mut doc: Value = serde_json::from_str(text).unwrap();
    if let Some(resources) = doc["resources"].as_object_mut() {
        for (addr, r) in resources.iter_mut() {
            let addr: slipway::addr::Address = addr.parse().unwrap();
            let sensitive =
                slipway::resource::spec_opt(&addr.kind_key()).map_or(&[][..], |s| s.sensitive);
            if let Some(attrs) = r["attributes"].as_object_mut() {
                for a in sensitive {
                    attrs.remove(*a);
                }
            }
        }
    }
    doc.to_string()
}

const TLS_ADDR: &str = "tls.certificate.lb_webhook";
const SECRET_ADDR: &str = "k8s.secret.kube-system/aws-load-balancer-tls";

/// Makes the simulated cloud's webhook certificate and its Secret hold
/// real-looking private keys, as refresh will read them.
fn plant_keys(p: &Project) {
    p.edit_world(|w| {
        let mut planted = 0;
        for o in w["objects"].as_object_mut().unwrap().values_mut() {
            if o["addr"] == TLS_ADDR {
                o["attrs"]["key_pem"] = json!(tls_key_pem());
                o["attrs"]["key_pem_base64"] = json!(b64(&tls_key_pem()));
                o["attrs"]["ca_key_pem"] = json!(ca_key_pem());
                planted += 1;
            }
            if o["addr"] == SECRET_ADDR {
                assert!(
                    o["attrs"]["manifest"]["data"].is_object(),
                    "the Secret in the cloud has no data: {o}"
                );
                o["attrs"]["manifest"]["data"]["tls.key"] = json!(b64(&tls_key_pem()));
                planted += 1;
            }
        }
        assert_eq!(
            planted, 2,
            "the certificate and its Secret are in the cloud"
        );
        w["calls"] = json!([]);
    });
}

fn world_object(p: &Project, addr: &str) -> Value {
    p.world()["objects"]
        .as_object()
        .unwrap()
        .values()
        .find(|o| o["addr"] == addr)
        .unwrap_or_else(|| panic!("no {addr} in the cloud"))
        .clone()
}

/// The state and its backup: mode 0600, and nothing secret outside the
/// sensitive attributes.
#[track_caller]
fn assert_state_clean(p: &Project) {
    for path in [p.state_path(), p.path("state/smallcase.json.backup")] {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
        assert_clean(
            &format!("the readable parts of {}", path.display()),
            &readable_state(&text),
        );
    }
}

#[test]
fn no_secret_reaches_output_plan_files_or_the_readable_state() {
    let mut p = Project::reference();
    with_credentials(&mut p);
    let loud: &[&[&str]] = &[&[], &["-v"], &["-vv"], &["-q"], &["--json"]];
    let costly: &[&[&str]] = &[&["-vv"], &["--json"]];
    let run = |args: &[&str], extra: &[&str]| -> Run {
        let all: Vec<&str> = args.iter().chain(extra).copied().collect();
        let run = p.run(&all);
        assert_run_clean(&run);
        run
    };
    for v in loud {
        run(&["validate"], v).success();
        run(&["graph"], v).success();
        run(&["jenkinsfile"], v).success();
    }
    // From empty through a saved plan.
    run(&["plan", "--out", "empty.json"], &["-vv"]).success();
    run(&["apply", "empty.json"], &["-vv"]).success();
    assert_state_clean(&p);

    plant_keys(&p);
    // Plain `plan` output is checked below, with `plan --out … -vv`.
    run(&["plan", "--json"], &[]).success();
    for v in costly {
        let drift = run(&["drift"], v);
        assert_eq!(
            drift.code,
            2,
            "the planted keys are drift\n{}",
            dump(&drift)
        );
    }
    // Recorded by an apply that has something to do.
    p.edit_stack("keep_images  = 30", "keep_images  = 10");
    run(&["apply", "--auto-approve"], &["-vv"]).success();
    assert_eq!(
        p.state()["resources"][TLS_ADDR]["attributes"]["key_pem"],
        json!(tls_key_pem()),
        "the state keeps the key (mode 0600, docs/state.md)"
    );
    assert_state_clean(&p);
    for v in loud {
        run(&["state", "list"], v).success();
        run(&["state", "show", TLS_ADDR], v).success();
        run(&["state", "show", SECRET_ADDR], v).success();
        run(&["state", "lock"], v);
    }

    // A saved plan that changes the Secret (changed behind slipway's back)
    // holds no key, and applying it still puts the real one back.
    p.edit_world(|w| {
        for o in w["objects"].as_object_mut().unwrap().values_mut() {
            if o["addr"] == SECRET_ADDR {
                o["attrs"]["manifest"]["data"]["tls.key"] = json!(b64("tampered"));
            }
        }
    });
    p.edit_stack("keep_images  = 10", "keep_images  = 20");
    run(&["plan", "--out", "changes.json"], &["-vv"])
        .success()
        .stdout_has(&format!("~ {SECRET_ADDR}"));
    run(&["apply", "changes.json"], &["-vv"]).success();
    assert_eq!(
        world_object(&p, SECRET_ADDR)["attrs"]["manifest"]["data"]["tls.key"],
        json!(b64(&tls_key_pem())),
        "the saved plan's Secret got the key from the state"
    );
    assert_eq!(
        p.state()["resources"][TLS_ADDR]["attributes"]["key_pem"],
        json!(tls_key_pem()),
        "applying a saved plan keeps the key in the state"
    );
    run(&["plan", "--detailed-exitcode"], &[]).code(0);
    assert_state_clean(&p);

    run(
        &["destroy", "--auto-approve", "--allow-protected"],
        &["-vv"],
    )
    .success();

    // Every file slipway wrote — saved plans, and anything else it might
    // leave (logs) — outside the simulated cloud and the state.
    let mut seen = 0;
    for entry in walk(p.dir.path()) {
        let rel = entry.strip_prefix(p.dir.path()).unwrap().to_path_buf();
        if rel.starts_with("k8s") || rel.starts_with("stacks") || rel.starts_with("state") {
            continue;
        }
        // The simulated cloud holds the keys as the cluster would.
        if rel.to_string_lossy().starts_with("cloud.json") {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).into_owned();
        assert_clean(&rel.display().to_string(), &text);
        if rel.extension().is_some_and(|e| e == "json") {
            let mode = std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", rel.display());
        }
        seen += 1;
    }
    assert!(seen >= 2, "the saved plans were checked");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn no_planned_attribute_carries_a_secret_outside_a_sensitive_one() {
    // A non-sensitive attribute that refers to a secret would be printed
    // in plans: only sensitive attributes may refer to sensitive ones.
    for sample in samples() {
        let desired = sample.stack.desired().unwrap();
        for (addr, r) in desired.resources() {
            let own =
                slipway::resource::spec_opt(&addr.kind_key()).map_or(&[][..], |s| s.sensitive);
            for (attr, e) in r.attrs() {
                for reference in e.references() {
                    let target = slipway::resource::spec_opt(&reference.addr.kind_key())
                        .map_or(&[][..], |s| s.sensitive);
                    if target.contains(&reference.attr.as_str()) {
                        assert!(
                            own.contains(&attr.as_str()),
                            "`{addr}` `{attr}` refers to the secret `{reference}` but is not sensitive"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_jenkins_passwords_are_made_on_the_instance_never_by_slipway() {
    // slipway never holds the Jenkins passwords: the master's first boot
    // makes them and keeps them in SSM. The user data (in plans and the
    // state) only says where they come from.
    let desired = reference_sample().stack.desired().unwrap();
    let master: slipway::addr::Address = "aws.instance.jenkins_master".parse().unwrap();
    let user_data = resolved(desired.get_opt(&master).unwrap().attrs())["user_data"]
        .as_str()
        .unwrap()
        .to_string();
    let assignment =
        regex_lite::Regex::new(r#"(?m)^\s*([A-Z_]*(PASSWORD|TOKEN|SECRET)[A-Z_]*)=(.*)$"#).unwrap();
    let mut seen = 0;
    for c in assignment.captures_iter(&user_data) {
        let value = &c[3];
        assert!(
            value.trim_start_matches('"').starts_with("$("),
            "`{}` is given a value in the user data, not made on the instance: {value}",
            &c[1]
        );
        seen += 1;
    }
    assert!(seen >= 3, "the user data makes the passwords:\n{user_data}");
    let password = regex_lite::Regex::new(r#""password":\s*"([^"]*)""#).unwrap();
    for c in password.captures_iter(&user_data) {
        assert!(
            c[1].starts_with("${") && c[1].ends_with('}'),
            "a password in the Jenkins configuration: {}",
            &c[1]
        );
    }
}

/// The real providers: the AWS SDK with the credentials above against the
/// local AWS, and the Kubernetes test server reached through EKS with
/// slipway's own bearer tokens. Slow (the local AWS and the test server
/// start): the long tier runs it.
#[test]
fn no_secret_reaches_output_with_the_real_providers() {
    use common::kubetest::{KubeTest, QUICK};
    use common::localaws::LocalAws;
    let aws = LocalAws::start(&["--time-scale", "0.002"]);
    let secret = format!("AKIASENTINELKEYID0000:{SECRET_ACCESS_KEY}");
    let args: Vec<&str> = [
        "--aws-endpoint",
        aws.endpoint.as_str(),
        "--eks-cluster-name",
        "smallcase",
        "--eks-secret-key",
        secret.as_str(),
    ]
    .into_iter()
    .chain(QUICK.iter().copied())
    .collect();
    let kube = KubeTest::start_with(&args);
    kube.seed_eks_defaults();
    let mut p = Project::platform_through_eks(&aws, &kube);
    with_credentials(&mut p);
    p.env
        .retain(|(k, _)| *k != "HTTPS_PROXY" && *k != "NO_PROXY");
    let run = |args: &[&str]| -> Run {
        let run = p.run(args);
        assert_run_clean(&run);
        run
    };
    run(&["apply", "--auto-approve", "-vv"])
        .success()
        .stdout_has("Apply complete!");
    assert!(
        kube.auth()["eks_tokens"].as_u64() >= Some(1),
        "slipway connected with its own token: {}",
        kube.auth()
    );
    run(&["plan", "--out", "p.json", "-vv"]).success();
    run(&["plan", "--json"]).success();
    run(&["drift", "-vv"]);
    run(&["drift", "--json"]);
    run(&["state", "show", TLS_ADDR]).success();
    assert_state_clean(&p);
    assert_clean(
        "the saved plan",
        &std::fs::read_to_string(p.path("p.json")).unwrap(),
    );
    // A rejected token is an error path: it must not print the token.
    let wrong = KubeTest::for_eks_cluster(&aws.endpoint, "elsewhere");
    let mut q = Project::platform_through_eks(&aws, &wrong);
    with_credentials(&mut q);
    q.env
        .retain(|(k, _)| *k != "HTTPS_PROXY" && *k != "NO_PROXY");
    let refused = q.run(&["plan", "-vv"]);
    assert_run_clean(&refused);
    run(&["destroy", "--auto-approve", "--allow-protected", "-vv"]).success();
}

// ---------------------------------------------------------------------------
// 6. Least privilege

/// A stack with every option that adds an identity, a policy statement or
/// a network rule, and `count` environments.
fn large_stack_text(count: usize) -> String {
    let mut s = String::from(
        r#"[stack]
name   = "bigcase"
region = "ap-south-1"
tags   = { Team = "platform", CostCenter = "42" }

[network]
cidr = "10.0.0.0/16"
azs  = 3
nat  = "per_az"

[jenkins]
master = { instance_type = "t3.medium", allowed_cidrs = ["203.0.113.0/24", "198.51.100.7/32"], key_name = "ops", tls_parameter_path = "/bigcase/jenkins/tls" }
agents = { count = 20, instance_type = "t3.large" }
repository_url = "https://github.com/example/app.git"
webhook_cidrs  = ["192.30.252.0/22", "185.199.108.0/22"]
scan_interval  = "5m"

[registry]
repository = "bigcase/app"

[cluster]
name    = "bigcase"
version = "1.31"
public_access_cidrs = ["203.0.113.0/24"]
admins  = ["arn:aws:iam::123456789012:role/ci", "arn:aws:iam::123456789012:user/ops"]
fargate_profile_quota = 250

[ingress]
controller_version = "2.8.2"

[state]
backend    = "s3"
bucket     = "bigcase-state"
kms_key_id = "arn:aws:kms:ap-south-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
"#,
    );
    for i in 0..count {
        s.push_str(&format!(
            "\n[environments.env-{i:04}]\nbranch = \"env-{i:04}\"\nnamespace = \"bigcase-env-{i:04}\"\noverlay = \"k8s/overlays/develop\"\n"
        ));
        if i % 10 == 0 {
            s.push_str("protected = true\n");
        }
        if i > 0 {
            s.push_str(&format!("promote_from = \"env-{:04}\"\n", i - 1));
        }
    }
    s
}

/// A stack under test, and its file as JSON: what it asks for.
struct Sample {
    name: String,
    stack: Stack,
    toml: Value,
}

fn sample(name: &str, path: &Path, text: &str) -> Sample {
    let table: toml::Table = toml::from_str(text).unwrap();
    Sample {
        name: name.to_string(),
        stack: Stack::parse(path, text).unwrap_or_else(|e| panic!("{name}: {e}")),
        toml: serde_json::to_value(table).unwrap(),
    }
}

fn reference_sample() -> Sample {
    sample(
        "the reference stack",
        &root().join("stacks/smallcase.toml"),
        &reference_text(),
    )
}

/// The generated stack with 200 environments (its cluster's Fargate
/// profile quota raised to fit) and its environment count.
fn large_sample() -> (Sample, usize) {
    let path = root().join("stacks/bigcase.toml");
    let count = 200;
    let name = format!("the large stack ({count} environments)");
    (sample(&name, &path, &large_stack_text(count)), count)
}

fn samples() -> Vec<Sample> {
    vec![reference_sample(), large_sample().0]
}

/// Attribute values with every reference replaced by `<ADDR.ATTR>`.
fn resolved(attrs: &BTreeMap<String, slipway::resource::Expr>) -> BTreeMap<String, Value> {
    attrs
        .iter()
        .map(|(k, e)| {
            let v = e
                .resolve(&|r| Some(Value::String(format!("<{r}>"))))
                .unwrap_or_else(|err| panic!("{k}: {err}"));
            (k.clone(), v)
        })
        .collect()
}

/// `(address, attribute, resolved value)` of every desired AWS resource.
fn aws_attributes(stack: &Stack) -> Vec<(String, String, Value)> {
    let desired = stack.desired().unwrap();
    let mut out = Vec::new();
    for (addr, r) in desired.resources() {
        if !addr.to_string().starts_with("aws.") {
            continue;
        }
        for (k, v) in resolved(r.attrs()) {
            out.push((addr.to_string(), k, v));
        }
    }
    out
}

/// A grant of `*` — every resource, or an action with a wildcard — that
/// the allow-list must name: where, which action, what.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Wide {
    addr: String,
    action: String,
    why: &'static str,
}

/// Grants of `*` slipway makes on purpose, each documented in docs/aws.md
/// ("Least privilege"): `(address, label in the docs, actions, reason)`.
const ALLOWED: &[(&str, &str, &[&str], &str)] = &[
    (
        "aws.iam_role_policy.jenkins_agent",
        "EcrLogin",
        &["ecr:GetAuthorizationToken"],
        "ECR's login token is for the whole registry; the action has no resource-level permissions",
    ),
    (
        "aws.iam_role_policy.jenkins_production",
        "EcrLogin",
        &["ecr:GetAuthorizationToken"],
        "as for the build agents",
    ),
    (
        "aws.iam_role_policy.jenkins_agent",
        "ReadTargetHealth",
        &["elasticloadbalancing:DescribeTargetHealth"],
        "deploy waits for healthy targets; Describe actions have no resource-level permissions",
    ),
    (
        "aws.iam_role_policy.jenkins_production",
        "ReadTargetHealth",
        &["elasticloadbalancing:DescribeTargetHealth"],
        "as for the build agents",
    ),
    (
        "aws.iam_role_policy.jenkins_master",
        "FindAgents",
        &["ec2:DescribeInstances"],
        "the master finds its agents by tag; EC2 Describe actions have no resource-level permissions",
    ),
    (
        "aws.iam_role_policy.drift_read",
        "ReadForDrift",
        &[
            "ec2:Describe*",
            "iam:Get*",
            "iam:List*",
            "ecr:DescribeRepositories",
            "ecr:ListTagsForResource",
            "ecr:GetLifecyclePolicy",
            "eks:Describe*",
            "eks:List*",
            "elasticloadbalancing:Describe*",
            "sts:GetCallerIdentity",
        ],
        "drift's inventory of everything tagged as the stack's: reads only, of every resource by design",
    ),
    (
        "aws.iam_role_policy.drift_read",
        "DecryptState",
        &["kms:Decrypt"],
        "reading an SSE-KMS state; only through S3 in the state's region (kms:ViaService)",
    ),
    (
        "aws.iam_policy.lb_controller",
        "iam:CreateServiceLinkedRole",
        &["iam:CreateServiceLinkedRole"],
        "upstream policy: only for elasticloadbalancing.amazonaws.com (condition)",
    ),
    (
        "aws.iam_policy.lb_controller",
        "Describe and Get",
        &[
            "ec2:DescribeAccountAttributes",
            "ec2:DescribeAddresses",
            "ec2:DescribeAvailabilityZones",
            "ec2:DescribeInternetGateways",
            "ec2:DescribeVpcs",
            "ec2:DescribeVpcPeeringConnections",
            "ec2:DescribeSubnets",
            "ec2:DescribeSecurityGroups",
            "ec2:DescribeInstances",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DescribeTags",
            "ec2:GetCoipPoolUsage",
            "ec2:DescribeCoipPools",
            "elasticloadbalancing:DescribeLoadBalancers",
            "elasticloadbalancing:DescribeLoadBalancerAttributes",
            "elasticloadbalancing:DescribeListeners",
            "elasticloadbalancing:DescribeListenerCertificates",
            "elasticloadbalancing:DescribeSSLPolicies",
            "elasticloadbalancing:DescribeRules",
            "elasticloadbalancing:DescribeTargetGroups",
            "elasticloadbalancing:DescribeTargetGroupAttributes",
            "elasticloadbalancing:DescribeTargetHealth",
            "elasticloadbalancing:DescribeTags",
            "elasticloadbalancing:DescribeTrustStores",
        ],
        "upstream policy: reads, which have no resource-level permissions",
    ),
    (
        "aws.iam_policy.lb_controller",
        "certificates, WAF and Shield",
        &[
            "cognito-idp:DescribeUserPoolClient",
            "acm:ListCertificates",
            "acm:DescribeCertificate",
            "iam:ListServerCertificates",
            "iam:GetServerCertificate",
            "waf-regional:GetWebACL",
            "waf-regional:GetWebACLForResource",
            "waf-regional:AssociateWebACL",
            "waf-regional:DisassociateWebACL",
            "wafv2:GetWebACL",
            "wafv2:GetWebACLForResource",
            "wafv2:AssociateWebACL",
            "wafv2:DisassociateWebACL",
            "shield:GetSubscriptionState",
            "shield:DescribeProtection",
            "shield:CreateProtection",
            "shield:DeleteProtection",
        ],
        "upstream policy: what an Ingress's annotations attach to its load balancer",
    ),
    (
        "aws.iam_policy.lb_controller",
        "security groups",
        &[
            "ec2:AuthorizeSecurityGroupIngress",
            "ec2:RevokeSecurityGroupIngress",
            "ec2:CreateSecurityGroup",
            "ec2:DeleteSecurityGroup",
        ],
        "upstream policy: the load balancers' security groups; deleting needs the controller's cluster tag",
    ),
    (
        "aws.iam_policy.lb_controller",
        "load balancers, listeners and rules",
        &[
            "elasticloadbalancing:CreateLoadBalancer",
            "elasticloadbalancing:CreateTargetGroup",
            "elasticloadbalancing:CreateListener",
            "elasticloadbalancing:DeleteListener",
            "elasticloadbalancing:CreateRule",
            "elasticloadbalancing:DeleteRule",
            "elasticloadbalancing:ModifyLoadBalancerAttributes",
            "elasticloadbalancing:SetIpAddressType",
            "elasticloadbalancing:SetSecurityGroups",
            "elasticloadbalancing:SetSubnets",
            "elasticloadbalancing:DeleteLoadBalancer",
            "elasticloadbalancing:ModifyTargetGroup",
            "elasticloadbalancing:ModifyTargetGroupAttributes",
            "elasticloadbalancing:DeleteTargetGroup",
            "elasticloadbalancing:SetWebAcl",
            "elasticloadbalancing:ModifyListener",
            "elasticloadbalancing:AddListenerCertificates",
            "elasticloadbalancing:RemoveListenerCertificates",
            "elasticloadbalancing:ModifyRule",
        ],
        "upstream policy: what it makes for Ingresses; creating and changing load balancers and target groups needs the cluster tag",
    ),
];

/// AWS managed policies slipway attaches (their documents are AWS's), each
/// with the reason.
const MANAGED: &[(&str, &str)] = &[
    (
        "AmazonEKSClusterPolicy",
        "the EKS cluster's service role, as EKS requires",
    ),
    (
        "AmazonEKSFargatePodExecutionRolePolicy",
        "the Fargate pod execution role, as EKS requires",
    ),
];

fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

/// Every IAM policy document among `v`'s values (anything with a `Statement`).
fn documents(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) => {
            if m.contains_key("Statement") {
                out.push(v.clone());
            }
            m.values().for_each(|c| documents(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| documents(c, out)),
        _ => {}
    }
}

/// The wide grants of a stack, and what else is wrong with its policies.
fn wide_grants(sample: &Sample) -> (BTreeSet<Wide>, Vec<String>) {
    let stack = &sample.stack;
    let mut wide = BTreeSet::new();
    let mut wrong = Vec::new();
    let mut docs_seen = 0;
    for (addr, attr, value) in aws_attributes(stack) {
        let mut docs = Vec::new();
        documents(&value, &mut docs);
        for doc in docs {
            docs_seen += 1;
            for st in as_list(&doc["Statement"]) {
                let sid = st["Sid"].as_str().unwrap_or("").to_string();
                let at = format!("`{addr}` {attr} {sid}");
                if st["Effect"] != "Allow" {
                    continue;
                }
                for k in ["NotAction", "NotResource", "NotPrincipal"] {
                    if st.get(k).is_some() {
                        wrong.push(format!("{at}: `{k}` allows everything else"));
                    }
                }
                if let Some(principal) = st.get("Principal") {
                    let all: Vec<Value> = match principal {
                        Value::Object(m) => m.values().flat_map(as_list).collect(),
                        other => as_list(other),
                    };
                    if all.iter().any(|p| p == "*") {
                        wrong.push(format!("{at}: trusts every principal"));
                    }
                    if principal.get("Federated").is_some() {
                        let sub = st["Condition"]["StringEquals"]
                            .as_object()
                            .is_some_and(|m| m.keys().any(|k| k.ends_with(":sub")));
                        if !sub {
                            wrong.push(format!(
                                "{at}: a web identity trust without a `:sub` condition"
                            ));
                        }
                    }
                }
                let actions: Vec<String> = as_list(&st["Action"])
                    .iter()
                    .map(|a| a.as_str().unwrap_or_default().to_string())
                    .collect();
                let every_resource = st.get("Principal").is_none()
                    && as_list(&st["Resource"]).iter().any(|r| r == "*");
                for action in actions {
                    if action == "*" || action.ends_with(":*") {
                        wrong.push(format!("{at}: every action of a service: `{action}`"));
                    } else if action.contains('*') {
                        wide.insert(Wide {
                            addr: addr.clone(),
                            action: action.clone(),
                            why: "a wildcard action",
                        });
                    }
                    if every_resource {
                        wide.insert(Wide {
                            addr: addr.clone(),
                            action,
                            why: "every resource",
                        });
                    }
                }
            }
        }
    }
    if docs_seen < 10 {
        wrong.push(format!("only {docs_seen} policy documents found"));
    }
    // Managed policies: only those listed, and nobody made an admin the
    // stack did not name.
    let desired = stack.desired().unwrap();
    for (addr, attr, value) in aws_attributes(stack) {
        if let Some(arn) = value.as_str().filter(|_| attr == "policy_arn")
            && arn.contains(":iam::aws:policy/")
        {
            let name = arn.rsplit('/').next().unwrap_or_default();
            if !MANAGED.iter().any(|(m, _)| *m == name) {
                wrong.push(format!("`{addr}` attaches the AWS managed policy `{name}`"));
            }
        }
        if attr == "access_policies" {
            for p in as_list(&value) {
                let arn = p["policy_arn"].as_str().unwrap_or_default();
                let ok = (addr == "aws.eks_access_entry.drift"
                    && arn.ends_with("/AmazonEKSAdminViewPolicy"))
                    || (addr.starts_with("aws.eks_access_entry.admin-")
                        && arn.ends_with("/AmazonEKSClusterAdminPolicy"));
                if !ok {
                    wrong.push(format!("`{addr}` has the EKS access policy `{arn}`"));
                }
            }
        }
    }
    let admins = desired
        .resources()
        .keys()
        .filter(|a| a.to_string().starts_with("aws.eks_access_entry.admin-"))
        .count();
    let listed = sample.toml["cluster"]["admins"]
        .as_array()
        .map_or(0, Vec::len);
    if admins != listed {
        wrong.push(format!("{admins} cluster admins, the stack lists {listed}"));
    }
    (wide, wrong)
}

fn allowed(w: &Wide) -> bool {
    ALLOWED
        .iter()
        .any(|(addr, _, actions, _)| *addr == w.addr && actions.contains(&w.action.as_str()))
}

/// docs/aws.md's "Least privilege" section.
fn least_privilege_docs() -> String {
    let text = std::fs::read_to_string(root().join("docs/aws.md")).unwrap();
    let start = text
        .find("## Least privilege")
        .expect("docs/aws.md has a `## Least privilege` section");
    let rest = &text[start + 2..];
    let end = rest.find("\n## ").map_or(rest.len(), |i| i + 1);
    rest[..end].to_string()
}

#[test]
fn no_iam_policy_grants_more_than_the_documented_wildcards() {
    let docs = least_privilege_docs();
    let (large, envs) = large_sample();
    assert!(envs >= 10, "a large stack: {envs} environments");
    let mut used = BTreeSet::new();
    for sample in [reference_sample(), large] {
        let name = &sample.name;
        let (wide, wrong) = wide_grants(&sample);
        assert!(wrong.is_empty(), "{name}:\n{}", wrong.join("\n"));
        let unexpected: Vec<String> = wide
            .iter()
            .filter(|w| !allowed(w))
            .map(|w| format!("`{}` grants `{}` ({})", w.addr, w.action, w.why))
            .collect();
        assert!(
            unexpected.is_empty(),
            "{name}: grants beyond the allow-list:\n{}",
            unexpected.join("\n")
        );
        for w in &wide {
            used.insert((w.addr.clone(), w.action.clone()));
        }
    }
    // Every entry is needed and documented.
    for (addr, label, actions, _) in ALLOWED {
        for a in *actions {
            assert!(
                used.contains(&(addr.to_string(), a.to_string())),
                "the allow-list names `{a}` for `{addr}`, which no stack grants any more: remove it"
            );
        }
        assert!(
            docs.contains(&format!("`{addr}`")) && docs.contains(label),
            "docs/aws.md's Least privilege section does not document `{addr}` {label}"
        );
        if actions.len() <= 10 && !addr.contains("lb_controller") {
            for a in *actions {
                assert!(
                    docs.contains(a),
                    "docs/aws.md does not list `{a}` of `{addr}`"
                );
            }
        }
    }
    for (name, _) in MANAGED {
        assert!(docs.contains(name), "docs/aws.md does not list `{name}`");
    }
}

/// The CIDRs a world-open address would appear as.
const WORLD: &[&str] = &["0.0.0.0/0", "::/0"];

fn cidrs(v: &Value) -> Vec<String> {
    as_list(v)
        .iter()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect()
}

/// Network exposure of a stack: what is wrong with its security group
/// rules and its other world-open CIDRs.
fn exposure(sample: &Sample) -> Vec<String> {
    let (stack, toml) = (&sample.stack, &sample.toml);
    let asked = |key: &str| -> Vec<String> {
        match key {
            "allowed_cidrs" => cidrs(&toml["jenkins"]["master"]["allowed_cidrs"]),
            "webhook_cidrs" => cidrs(&toml["jenkins"]["webhook_cidrs"]),
            _ => Vec::new(),
        }
    };
    // Each rule slipway makes from a CIDR list, and the stack key it comes from.
    let source = |rule: &str| match rule {
        "aws.security_group_rule.jenkins_master_https"
        | "aws.security_group_rule.jenkins_master_ssh" => Some("allowed_cidrs"),
        "aws.security_group_rule.jenkins_master_webhook" => Some("webhook_cidrs"),
        _ => None,
    };
    let mut wrong = Vec::new();
    let mut rules = 0;
    for (addr, attr, value) in aws_attributes(stack) {
        let kind = addr.rsplit_once('.').map_or("", |(k, _)| k);
        if kind == "aws.security_group_rule" && attr.contains("cidr") {
            rules += 1;
            let given = cidrs(&value);
            match source(&addr) {
                Some(key) => {
                    let want = asked(key);
                    if given != want {
                        wrong.push(format!("`{addr}` opens {given:?}; `{key}` says {want:?}"));
                    }
                }
                None if !given.is_empty() => {
                    wrong.push(format!("`{addr}` opens {given:?}, from no stack key"));
                }
                None => {}
            }
            continue;
        }
        // Anything else world-open is a route to the internet, or the EKS
        // API's public endpoint as the stack (or its documented default) says.
        let mut strings = Vec::new();
        strings_in(&value, &mut strings);
        for s in strings.iter().filter(|s| WORLD.contains(&s.as_str())) {
            let ok = match (kind, attr.as_str()) {
                ("aws.route", "destination_cidr_block") => true,
                ("aws.eks_cluster", "public_access_cidrs") => {
                    let listed = cidrs(&toml["cluster"]["public_access_cidrs"]);
                    listed.contains(s) || toml["cluster"].get("public_access_cidrs").is_none()
                }
                _ => false,
            };
            if !ok {
                wrong.push(format!("`{addr}` {attr} opens `{s}`"));
            }
        }
    }
    if rules == 0 {
        wrong.push("no security group rule with CIDRs found".to_string());
    }
    wrong
}

fn strings_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|c| strings_in(c, out)),
        Value::Object(m) => m.values().for_each(|c| strings_in(c, out)),
        _ => {}
    }
}

fn world_open_rules(stack: &Stack) -> Vec<String> {
    aws_attributes(stack)
        .into_iter()
        .filter(|(addr, attr, v)| {
            addr.starts_with("aws.security_group_rule.")
                && attr.contains("cidr")
                && cidrs(v).iter().any(|c| WORLD.contains(&c.as_str()))
        })
        .map(|(addr, _, _)| addr)
        .collect()
}

#[test]
fn no_security_group_rule_opens_the_world_unless_the_stack_asks() {
    for sample in samples() {
        let wrong = exposure(&sample);
        assert!(wrong.is_empty(), "{}:\n{}", sample.name, wrong.join("\n"));
        assert_eq!(
            world_open_rules(&sample.stack),
            Vec::<String>::new(),
            "{}",
            sample.name
        );
    }
    // Asked for, it is what the stack gets — and only there.
    let text = large_stack_text(3)
        .replace(
            "allowed_cidrs = [\"203.0.113.0/24\", \"198.51.100.7/32\"]",
            "allowed_cidrs = [\"0.0.0.0/0\"]",
        )
        .replace(
            "webhook_cidrs  = [\"192.30.252.0/22\", \"185.199.108.0/22\"]",
            "webhook_cidrs  = [\"0.0.0.0/0\"]",
        );
    let open = sample("an open stack", &root().join("stacks/bigcase.toml"), &text);
    assert_eq!(exposure(&open), Vec::<String>::new());
    assert_eq!(
        world_open_rules(&open.stack),
        vec![
            "aws.security_group_rule.jenkins_master_https".to_string(),
            "aws.security_group_rule.jenkins_master_ssh".to_string(),
            "aws.security_group_rule.jenkins_master_webhook".to_string(),
        ]
    );
}
