//! The reliability suite's runs (docs/reliability.md): applies of the
//! reference stack through injected faults and after SIGKILL at seeded
//! random points, each checked by counting the cloud's objects by their
//! `slipway:address` tag (exactly one per address, none the state does not
//! know); deploys killed at random points; and concurrent deploys to one
//! environment, which must never interleave.
//!
//! `SLIPWAY_RELIABILITY_RUNS` sets how many seeded runs each test makes
//! (default 2, the quick tier); `SLIPWAY_RELIABILITY_SEED` the first seed
//! (default 1), so a failure is replayed with the seed it names.

mod common;

use std::time::{Duration, Instant};

use common::localaws::LocalAws;
use common::{Project, Rng, Run, seeds};
use serde_json::{Value, json};

fn launch() -> LocalAws {
    LocalAws::start(&["--time-scale", "0.002"])
}

fn mutating(aws: &LocalAws) -> u64 {
    aws.calls()["mutating"].as_u64().unwrap_or(0)
}

/// The state file, if any, is whole JSON: a kill never leaves it torn.
#[track_caller]
fn assert_state_whole(p: &Project, seed: u64) {
    let path = p.state_path();
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Err(e) = serde_json::from_str::<Value>(&text)
    {
        panic!("seed {seed}: the state file is torn ({e}):\n{text}");
    }
}

/// Exactly one live cloud object per address, and every one of them an
/// address the state records (with the same id where the state keeps the
/// cloud's id): nothing duplicated, nothing orphaned.
#[track_caller]
fn assert_one_object_per_address(aws: &LocalAws, p: &Project, what: &str) {
    let objects = aws.objects_by_address();
    assert!(
        objects.len() >= 40,
        "{what}: the count by tag found only {} addresses: {objects:?}",
        objects.len()
    );
    let state = p.state();
    let resources = &state["resources"];
    let mut problems = Vec::new();
    for (addr, ids) in &objects {
        if ids.len() != 1 {
            problems.push(format!("{addr}: {} objects {ids:?}", ids.len()));
        }
        let recorded = &resources[addr];
        if recorded.is_null() {
            problems.push(format!("{addr}: orphaned {ids:?} (not in the state)"));
            continue;
        }
        // EC2 objects are recorded by their id; IAM, ECR and EKS ones by a
        // name (`cluster/profile`, `cluster/principal`) their ARN holds.
        let id = recorded["id"].as_str().unwrap_or_default();
        let name = id.rsplit('/').next().unwrap_or(id);
        let same = |cloud: &String| {
            cloud == id || (cloud.starts_with("arn:") && !name.is_empty() && cloud.contains(name))
        };
        if ids.len() == 1 && !ids.iter().any(same) {
            problems.push(format!(
                "{addr}: the state says `{id}`, the cloud has {ids:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "{what}:\n{}", problems.join("\n"));
}

fn apply(p: &Project) -> Run {
    p.run(&["apply", "--auto-approve"])
}

// ---------------------------------------------------------------------------
// 1. Faults

#[test]
fn applies_through_ten_percent_faults_converge_with_one_object_per_address() {
    for seed in seeds() {
        let aws = launch();
        let p = Project::reference_on(&aws);
        aws.configure(json!({"seed": seed, "faults": {
            "rate": 0.1, "kinds": ["throttle", "500", "503", "drop"]}}));
        let run = apply(&p);
        assert!(
            run.code == 0,
            "seed {seed}: apply through faults failed:\n{}\n{}",
            run.stdout,
            run.stderr
        );
        let injected: u64 = aws.calls()["calls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["faults"].as_u64().unwrap_or(0))
            .sum();
        assert!(
            injected >= 5,
            "seed {seed}: only {injected} faults injected"
        );
        aws.configure(json!({"faults": {"rate": 0.0}}));
        p.run(&["plan", "--detailed-exitcode"]).code(0);
        assert_one_object_per_address(&aws, &p, &format!("seed {seed} ({injected} faults)"));
    }
}

// ---------------------------------------------------------------------------
// 2. Crashes

#[test]
fn applies_killed_at_seeded_random_points_converge_on_a_rerun() {
    // How many mutating calls a whole apply makes: the range of kill points.
    let total = {
        let aws = launch();
        let p = Project::reference_on(&aws);
        apply(&p).success();
        mutating(&aws)
    };
    assert!(total > 20, "a whole apply made {total} mutating calls");
    for seed in seeds() {
        let mut rng = Rng(seed);
        let point = rng.between(1, total - 1);
        let aws = launch();
        aws.configure(json!({"latency_ms": 15}));
        let p = Project::reference_on(&aws);
        let mut child = p
            .command(&["apply", "--auto-approve"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while mutating(&aws) < point && child.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "seed {seed}: the apply never reached call {point}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        child.wait().unwrap();
        let at = mutating(&aws);
        assert_state_whole(&p, seed);
        aws.configure(json!({"latency_ms": 0}));
        let run = apply(&p);
        assert!(
            run.code == 0,
            "seed {seed}: the rerun after SIGKILL at mutating call {at} of {total} failed:\n{}\n{}",
            run.stdout,
            run.stderr
        );
        p.run(&["plan", "--detailed-exitcode"]).code(0);
        assert_one_object_per_address(
            &aws,
            &p,
            &format!("seed {seed}: SIGKILL at mutating call {at} of {total}"),
        );
    }
}
