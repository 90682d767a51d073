//! The engine end to end through the real binary and the simulated cloud:
//! apply from empty, no-op re-plan, update, replace ordering, failures,
//! interruption, saved plans, locking, destroy, drift.

mod common;

use std::time::{Duration, Instant};

use common::{Project, finished, send_signal, spawn};
use serde_json::{Value, json};

fn applied() -> Project {
    let p = Project::reference();
    p.run(&["apply", "--auto-approve"])
        .success()
        .stdout_has("Apply complete!");
    p
}

#[test]
fn apply_from_empty_converges_and_replans_as_no_op() {
    let p = Project::reference();
    let plan = p.run(&["plan", "--detailed-exitcode"]);
    plan.code(2)
        .stdout_has("+ aws.vpc.main")
        .stdout_has("(known after apply)");
    assert!(
        plan.stdout.contains("to add, 0 to change, 0 to destroy."),
        "{}",
        plan.stdout
    );

    p.run(&["apply", "--auto-approve"])
        .success()
        .stdout_has("Apply complete!");
    assert!(
        p.state_count() > 40,
        "the reference stack has the whole platform"
    );
    assert_eq!(p.object_count(), p.state_count());
    p.run(&["plan", "--detailed-exitcode"])
        .code(0)
        .stdout_has("No changes.");

    // References were resolved: the subnet points at the VPC the cloud made.
    let state = p.state();
    let vpc_id = state["resources"]["aws.vpc.main"]["id"].clone();
    assert_eq!(
        state["resources"]["aws.subnet.public_a"]["attributes"]["vpc_id"],
        vpc_id
    );
}

#[test]
fn apply_refuses_without_a_terminal_or_approval() {
    let p = Project::reference();
    p.run(&["apply"])
        .code(1)
        .stderr_has("without approval")
        .stderr_has("--auto-approve");
    p.run(&["destroy"]).code(1);
    assert_eq!(p.object_count(), 0);
}

#[test]
fn a_changed_setting_is_updated_in_place() {
    let p = applied();
    let repo_id = p.object_id("aws.ecr_lifecycle_policy.app");
    p.edit_stack("keep_images  = 30", "keep_images  = 10");
    let plan = p.run(&["plan", "--detailed-exitcode"]);
    plan.code(2)
        .stdout_has("~ aws.ecr_lifecycle_policy.app")
        .stdout_has("0 to add, 1 to change, 0 to destroy.");
    p.run(&["apply", "--auto-approve"]).success();
    assert_eq!(
        p.object_id("aws.ecr_lifecycle_policy.app"),
        repo_id,
        "updated in place, not replaced"
    );
    p.run(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_force_new_attribute_replaces_dependents_first_and_recreates_in_order() {
    let p = applied();
    let old = p.object_id("aws.ecr_repository.app").unwrap();
    p.edit_stack(
        "repository   = \"smallcase/app\"",
        "repository   = \"smallcase/web\"",
    );
    let plan = p.run(&["plan"]);
    plan.success()
        .stdout_has("-/+ aws.ecr_repository.app")
        .stdout_has("# forces replacement")
        .stdout_has("# protected: applying this needs --allow-protected");

    // The repository holds the images: replacing it is refused unasked,
    // before anything changes.
    p.edit_world(|w| w["calls"] = json!([]));
    p.run(&["apply", "--auto-approve"])
        .code(1)
        .stderr_has("refusing to delete or replace 1 protected resource(s): `aws.ecr_repository.app` (replaced)")
        .stderr_has("--allow-protected");
    assert_eq!(p.mutating_calls(), 0);
    p.run(&["apply", "--auto-approve", "--allow-protected"])
        .success();
    let new = p.object_id("aws.ecr_repository.app").unwrap();
    assert_ne!(old, new);
    let at = |s: &str| p.call_index(s);
    assert!(at("delete aws.ecr_lifecycle_policy.app") < at("delete aws.ecr_repository.app"));
    assert!(at("delete aws.ecr_repository.app") < at("create aws.ecr_repository.app"));
    assert!(at("create aws.ecr_repository.app") < at("create aws.ecr_lifecycle_policy.app"));
    p.run(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_protected_environment_is_never_deleted_or_replaced_unasked() {
    let p = applied();
    // Its namespace renamed: the namespace, and what lives in it, replaced.
    p.edit_stack(
        "namespace = \"smallcase-blue\"",
        "namespace = \"smallcase-prod\"",
    );
    p.run(&["plan"])
        .success()
        .stdout_has("# protected: applying this needs --allow-protected");
    p.edit_world(|w| w["calls"] = json!([]));
    p.run(&["apply", "--auto-approve"])
        .code(1)
        .stderr_has("protected resource(s)")
        .stderr_has("environment `blue`");
    assert_eq!(p.mutating_calls(), 0);
    p.edit_stack(
        "namespace = \"smallcase-prod\"",
        "namespace = \"smallcase-blue\"",
    );

    // Removed from the stack: the state remembers it was protected.
    let stack = std::fs::read_to_string(p.path("stacks/smallcase.toml")).unwrap();
    let start = stack.find("[environments.blue]").unwrap();
    let end = stack.find("[environments.green]").unwrap();
    let without = format!("{}{}", &stack[..start], &stack[end..]);
    std::fs::write(p.path("stacks/smallcase.toml"), without).unwrap();
    p.run(&["plan"])
        .success()
        .stdout_has("- k8s.namespace.smallcase-blue")
        .stdout_has("# protected: applying this needs --allow-protected");
    let serial = p.state()["serial"].clone();
    p.run(&["apply", "--auto-approve"])
        .code(1)
        .stderr_has("`k8s.namespace.smallcase-blue` (deleted; environment `blue`)");
    assert_eq!(p.mutating_calls(), 0);
    assert_eq!(p.state()["serial"], serial);
    p.run(&["apply", "--auto-approve", "--allow-protected"])
        .success();
    assert!(
        p.state()["resources"]
            .get("k8s.namespace.smallcase-blue")
            .is_none()
    );
}

#[test]
fn an_apply_with_nothing_to_do_writes_nothing_and_a_saved_plan_stays_valid() {
    let p = applied();
    let serial = p.state()["serial"].clone();
    p.run(&["plan", "--out", "later.json"]).success();
    p.run(&["apply", "--auto-approve"])
        .success()
        .stdout_has("No changes.");
    assert_eq!(p.state()["serial"], serial);
    let saved = p.path("later.json");
    p.run(&["apply", saved.to_str().unwrap()]).success();
    assert_eq!(p.state()["serial"], serial);
}

#[test]
fn state_rm_forgets_without_deleting() {
    let p = applied();
    let id = p.object_id("aws.ecr_lifecycle_policy.app").unwrap();
    let serial = p.state()["serial"].as_u64().unwrap();
    p.edit_world(|w| w["calls"] = json!([]));
    p.run(&[
        "state",
        "rm",
        "aws.ecr_lifecycle_policy.app",
        "aws.vpc.nope",
    ])
    .code(1)
    .stderr_has("no resource `aws.vpc.nope`; nothing was removed");
    assert_eq!(p.state()["serial"].as_u64(), Some(serial));
    p.run(&["state", "rm", "aws.ecr_lifecycle_policy.app"])
        .success()
        .stdout_has("still exists");
    assert!(
        p.state()["resources"]
            .get("aws.ecr_lifecycle_policy.app")
            .is_none()
    );
    assert_eq!(p.state()["serial"].as_u64(), Some(serial + 1));
    assert_eq!(p.mutating_calls(), 0, "nothing deleted");
    assert_eq!(p.object_id("aws.ecr_lifecycle_policy.app"), Some(id));
    assert!(!p.path("state/smallcase.json.lock").exists());
}

#[test]
fn a_security_group_in_use_is_replaced_by_moving_its_users_over_first() {
    let p = applied();
    let sg = "aws.security_group.jenkins_master";
    let old = p.object_id(sg).unwrap();
    // As an older naming scheme made it: the name forces a new group.
    p.edit_world(|w| {
        w["objects"][old.as_str()]["attrs"]["name"] = json!("smallcase-master-v0");
        w["calls"] = json!([]);
    });
    p.run(&["plan"])
        .success()
        .stdout_has("+/- aws.security_group.jenkins_master")
        .stdout_has("the replacement is created first")
        .stdout_has("~ aws.instance.jenkins_master");
    // The simulated cloud refuses to delete a group still in use, as EC2 does.
    let run = p.run(&["apply", "--auto-approve"]);
    run.success();
    assert!(
        !run.stdout.contains("DependencyViolation"),
        "{}",
        run.stdout
    );
    let new = p.object_id(sg).unwrap();
    assert_ne!(old, new);
    let at = |s: &str| p.call_index(s);
    assert!(
        at("create aws.security_group.jenkins_master") < at("update aws.instance.jenkins_master")
    );
    assert!(
        at("update aws.instance.jenkins_master") < at("delete aws.security_group.jenkins_master")
    );
    assert!(
        p.state()["resources"]
            .get("aws.security_group.jenkins_master.deposed")
            .is_none()
    );
    assert!(
        p.world()["objects"].get(old.as_str()).is_none(),
        "the old group is gone"
    );
    p.run(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_replacement_stopped_halfway_keeps_the_old_object_in_the_state_until_it_is_gone() {
    let p = applied();
    let sg = "aws.security_group.jenkins_master";
    let old = p.object_id(sg).unwrap();
    p.edit_world(|w| {
        w["objects"][old.as_str()]["attrs"]["name"] = json!("smallcase-master-v0");
        w["faults"] =
            json!({"fail": {"update:aws.instance.jenkins_master": "RequestLimitExceeded"}});
    });
    p.run(&["apply", "--auto-approve"]).code(1);
    // Both groups exist, and the state knows both.
    let state = p.state();
    assert_eq!(
        state["resources"]["aws.security_group.jenkins_master.deposed"]["id"],
        json!(old)
    );
    assert_ne!(state["resources"][sg]["id"], json!(old));
    assert_eq!(p.object_count(), p.state_count());

    p.edit_world(|w| w["faults"] = json!({}));
    p.run(&["plan"])
        .success()
        .stdout_has("- aws.security_group.jenkins_master.deposed")
        .stdout_has("~ aws.instance.jenkins_master");
    p.run(&["apply", "--auto-approve"]).success();
    assert!(p.world()["objects"].get(old.as_str()).is_none());
    assert_eq!(p.object_count(), p.state_count());
    p.run(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_failure_skips_dependents_keeps_going_and_a_rerun_converges() {
    let p = Project::reference();
    p.edit_world(|w| {
        w["faults"] = json!({"fail": {"create:aws.vpc.main": "VpcLimitExceeded: too many VPCs"}})
    });
    let run = p.run(&["apply", "--auto-approve"]);
    run.code(1)
        .stdout_has("Apply failed.")
        .stdout_has("aws.vpc.main")
        .stdout_has("VpcLimitExceeded");
    run.stdout_has("skipped: `aws.vpc.main` failed");
    // Independent work finished and is in the state.
    let state = p.state();
    assert!(
        state["resources"]["aws.ecr_repository.app"].is_object(),
        "{state}"
    );
    assert!(state["resources"]["aws.subnet.public_a"].is_null());
    assert_eq!(p.object_count(), p.state_count());

    p.edit_world(|w| w["faults"] = json!({}));
    p.run(&["apply", "--auto-approve"]).success();
    p.run(&["plan", "--detailed-exitcode"]).code(0);
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_finishes_in_flight_work_saves_state_and_a_rerun_converges() {
    let p = Project::reference();
    p.edit_world(|w| w["faults"] = json!({"delay_ms": 400}));
    // Output goes to files: a pipe nobody reads would fill up and stall the run.
    let out = std::fs::File::create(p.path("apply.out")).unwrap();
    let err = std::fs::File::create(p.path("apply.err")).unwrap();
    let mut child = p
        .command(&["apply", "--auto-approve"])
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    wait_for("the first resources", || {
        p.state_path().exists() && p.state_count() >= 3
    });
    send_signal(child.id(), "TERM");
    let status = child.wait().unwrap();
    let run = common::Run {
        cmd: "slipway apply --auto-approve".into(),
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(p.path("apply.out")).unwrap(),
        stderr: std::fs::read_to_string(p.path("apply.err")).unwrap(),
    };
    run.code(130)
        .stderr_has("interrupted")
        .stdout_has("Apply interrupted.");
    // Everything the cloud has, the state has.
    assert_eq!(p.object_count(), p.state_count());
    assert!(
        !p.path("state/smallcase.json.lock").exists(),
        "the lock is released"
    );

    p.edit_world(|w| w["faults"] = json!({}));
    p.run(&["apply", "--auto-approve"]).success();
    p.run(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn sigint_during_refresh_releases_the_lock_and_changes_nothing() {
    let p = applied();
    p.edit_stack("keep_images  = 30", "keep_images  = 31");
    p.edit_world(|w| {
        w["faults"] = json!({"read_delay_ms": 3000});
        w["calls"] = json!([]);
    });
    let serial = p.state()["serial"].clone();
    let args = ["apply", "--auto-approve"];
    let child = spawn(&p, &args);
    let lock = p.path("state/smallcase.json.lock");
    wait_for("the lock", || lock.exists());
    std::thread::sleep(std::time::Duration::from_millis(300));
    send_signal(child.id(), "INT");
    let started = std::time::Instant::now();
    finished(&p, &args, child)
        .code(130)
        .stderr_has("interrupted before any change was made");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "it did not wait for the reads"
    );
    assert!(!lock.exists(), "the lock is released");
    assert_eq!(p.mutating_calls(), 0);
    assert_eq!(p.state()["serial"], serial);
}

#[test]
fn sigint_at_the_approval_prompt_exits_at_once_and_releases_the_lock() {
    let p = Project::reference();
    // On a terminal (util-linux `script`), with nobody answering. Standard
    // error goes straight to a file: `script` may exit before relaying the
    // last lines its child wrote.
    let cmd = format!("exec {} apply 2>run.err", env!("CARGO_BIN_EXE_slipway"));
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(p.dir.path())
        .env("SLIPWAY_FAKE_CLOUD", p.cloud())
        .stdin(std::process::Stdio::piped())
        // A file: a pipe nobody reads would fill up and stall the run.
        .stdout(std::fs::File::create(p.path("run.out")).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("util-linux `script` is needed for terminal tests");
    let lock = p.path("state/smallcase.json.lock");
    wait_for("the lock", || lock.exists());
    // The plan is made and the question asked; find slipway under `script`.
    let output = || {
        ["run.out", "run.err"]
            .map(|f| std::fs::read_to_string(p.path(f)).unwrap_or_default())
            .concat()
    };
    wait_for("the question", || output().contains("Enter a value"));
    let out = std::process::Command::new("pgrep")
        .args(["-P", &child.id().to_string()])
        .output()
        .unwrap();
    let pid: u32 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("slipway runs under script");
    send_signal(pid, "INT");
    let started = std::time::Instant::now();
    let status = child.wait().unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "it exited without an answer"
    );
    drop(child.stdin.take());
    assert_eq!(status.code(), Some(130));
    assert!(!lock.exists(), "the lock is released");
    assert_eq!(p.object_count(), 0, "nothing changed");
    let out = output();
    assert!(
        out.contains("interrupted before any change was made"),
        "{out}"
    );
}

#[test]
fn a_second_signal_abandons_the_waits_and_a_rerun_converges() {
    let p = Project::reference();
    p.edit_world(|w| w["faults"] = json!({"delay_ms": 20000}));
    let args = ["apply", "--auto-approve"];
    let child = spawn(&p, &args);
    wait_for("calls in flight", || {
        p.world()["calls"].as_array().is_some_and(|c| !c.is_empty())
    });
    let started = std::time::Instant::now();
    send_signal(child.id(), "TERM");
    std::thread::sleep(std::time::Duration::from_millis(300));
    send_signal(child.id(), "TERM");
    let run = finished(&p, &args, child);
    run.code(130)
        .stderr_has("abandoning")
        .stdout_has("abandoned while in flight");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "it did not wait for the calls in flight"
    );
    assert!(!p.path("state/smallcase.json.lock").exists());
    p.edit_world(|w| w["faults"] = json!({}));
    p.run(&["apply", "--auto-approve"]).success();
    p.run(&["plan", "--detailed-exitcode"]).code(0);
    assert_eq!(p.object_count(), p.state_count(), "nothing made twice");
}

#[test]
fn sigkill_mid_apply_loses_nothing_and_duplicates_nothing() {
    let p = Project::reference();
    p.edit_world(|w| w["faults"] = json!({"delay_ms": 400}));
    let mut child = p
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the first resources", || {
        p.state_path().exists() && p.state_count() >= 3
    });
    child.kill().unwrap();
    child.wait().unwrap();
    // Objects created but never recorded exist in the cloud only.
    let orphans = p.object_count() - p.state_count();

    p.edit_world(|w| w["faults"] = json!({}));
    let rerun = p.run(&["apply", "--auto-approve"]);
    rerun.success().stderr_has("took over a stale lock");
    assert_eq!(
        p.object_count(),
        p.state_count(),
        "every object is tracked once (adopted {orphans})"
    );
    p.run(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_second_mutating_run_is_refused_naming_the_holder() {
    let p = Project::reference();
    // Slow enough that the apply still holds the lock on a loaded machine.
    p.edit_world(|w| w["faults"] = json!({"delay_ms": 1000}));
    let child = p
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_for("the lock", || p.path("state/smallcase.json.lock").exists());
    let second = p.run(&["destroy", "--auto-approve", "--allow-protected"]);
    second
        .code(1)
        .stderr_has("the state is locked")
        .stderr_has(&format!("pid {pid}"))
        .stderr_has("apply --auto-approve")
        .stderr_has("hint:");
    p.run(&["state", "lock"])
        .success()
        .stdout_has(&format!("pid {pid}"));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    p.run(&["state", "lock"])
        .success()
        .stdout_has("Not locked.");
}

#[test]
fn a_saved_plan_applies_once_and_only_against_the_state_and_stack_it_saw() {
    let p = Project::reference();
    p.run(&["plan", "--out", "first.plan"])
        .success()
        .stdout_has("Saved the plan");
    p.run(&["plan", "--out", "second.plan"]).success();
    p.run(&["apply", "first.plan"])
        .success()
        .stdout_has("Apply complete!");
    p.run(&["apply", "first.plan"])
        .code(1)
        .stderr_has("already been applied");
    p.run(&["apply", "second.plan"])
        .code(1)
        .stderr_has("the state changed since plan");

    p.run(&["plan", "--out", "third.plan"]).success();
    p.edit_stack("keep_images  = 30", "keep_images  = 5");
    p.run(&["apply", "third.plan"])
        .code(1)
        .stderr_has("changed since plan")
        .stderr_has("hint: make a new plan");
    p.run(&["apply", "nope.plan"])
        .code(1)
        .stderr_has("cannot read plan file");
}

#[test]
fn destroy_env_removes_only_that_environment_and_protects_blue() {
    let p = applied();
    let total = p.object_count();
    p.run(&["destroy", "--env", "blue", "--auto-approve"])
        .code(1)
        .stderr_has("environment `blue` is protected")
        .stderr_has("--allow-protected");
    p.run(&["destroy", "--env", "nope", "--auto-approve"])
        .code(1)
        .stderr_has("no environment `nope`");
    p.run(&["destroy", "--env", "green", "--auto-approve"])
        .success()
        .stdout_has("Destroy complete!");
    assert!(p.object_id("k8s.namespace.smallcase-green").is_none());
    assert!(p.object_id("aws.eks_fargate_profile.green").is_none());
    assert!(p.object_id("k8s.namespace.smallcase-blue").is_some());
    assert!(p.object_id("aws.eks_cluster.main").is_some());
    let gone = total - p.object_count();
    assert!((2..10).contains(&gone), "destroyed {gone}");
    assert_eq!(p.object_count(), p.state_count());

    // The next apply puts green back.
    p.run(&["plan", "--detailed-exitcode"])
        .code(2)
        .stdout_has("+ k8s.namespace.smallcase-green");

    p.run(&["destroy", "--auto-approve"])
        .code(1)
        .stderr_has("protected environment(s) `blue`");
    p.run(&["destroy", "--auto-approve", "--allow-protected"])
        .success();
    assert_eq!(p.object_count(), 0);
    assert_eq!(p.state_count(), 0);
}

#[test]
fn drift_is_read_only_and_reports_changed_deleted_and_unmanaged() {
    let p = applied();
    p.run(&["drift"]).code(0).stdout_has("No drift");
    let vpc = p.object_id("aws.vpc.main").unwrap();
    let igw = p.object_id("aws.internet_gateway.main").unwrap();
    p.edit_world(|w| {
        w["objects"][&vpc]["attrs"]["enable_dns_hostnames"] = json!(false);
        w["objects"].as_object_mut().unwrap().remove(&igw);
        w["objects"]["sg-stray"] =
            json!({"addr": "aws.security_group.stray", "stack": "smallcase", "attrs": {}});
        w["calls"] = json!([]);
    });
    let run = p.run(&["drift"]);
    run.code(2)
        .stdout_has("~ aws.vpc.main has changed")
        .stdout_has("enable_dns_hostnames = true -> false");
    run.stdout_has("- aws.internet_gateway.main has been deleted")
        .stdout_has("aws.security_group.stray exists (`sg-stray`)");
    assert_eq!(p.mutating_calls(), 0, "drift must not change anything");

    let json = p.run(&["drift", "--json"]);
    json.code(2);
    let doc = json.json();
    assert_eq!(doc["format_version"], "2");
    assert_eq!(doc["result"], "drift");
    assert_eq!(doc["drifted"], true);
    let kinds: Vec<&str> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["deleted", "unmanaged", "modified"], "{doc}");
    assert_eq!(doc["counts"]["by_kind"]["modified"], 1);
    assert_eq!(doc["counts"]["by_kind"]["deleted"], 1);
    assert_eq!(doc["counts"]["by_kind"]["unmanaged"], 1);
    assert_eq!(doc["counts"]["drifted"], 3);
    assert!(doc["counts"]["checked"].as_u64().unwrap() > 40);
    let modified = &doc["findings"][2];
    assert_eq!(modified["path"], "enable_dns_hostnames");
    assert_eq!(modified["recorded"], true);
    assert_eq!(modified["live"], false);
    assert!(doc["timings_ms"]["total"].is_u64());
    assert_eq!(p.mutating_calls(), 0, "drift must not change anything");

    // A plan shows the deleted gateway will be recreated and the DNS setting put back.
    let plan = p.run(&["plan"]);
    plan.success()
        .stdout_has("+ aws.internet_gateway.main")
        .stdout_has("~ aws.vpc.main");
    assert_eq!(p.mutating_calls(), 0, "plan must not change anything");
    p.run(&["apply", "--auto-approve"]).success();
    p.run(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn drift_reports_two_objects_claiming_one_address_and_counts_accepted_drift() {
    let p = applied();
    let vpc = p.object_id("aws.vpc.main").unwrap();
    let agent = p.object_id("aws.instance.jenkins_agent_1").unwrap();
    p.edit_world(|w| {
        // "Launch more like this" copies the tags of the tracked instance.
        let copy = w["objects"][&agent].clone();
        w["objects"]["i-copy"] = copy;
        w["objects"][&vpc]["attrs"]["tags"]["Owner"] = json!("someone");
        w["calls"] = json!([]);
    });
    let run = p.run(&["drift"]);
    run.code(2)
        .stdout_has("aws.instance.jenkins_agent_1 is claimed by 2 objects")
        .stdout_has(&format!("`{agent}`, `i-copy`"))
        .stdout_has("~ tags.Owner = (absent) -> \"someone\"")
        .stdout_has("Drift: 1 modified, 1 duplicate.");

    // Accepted on the command line: counted, listed apart, not drift.
    let run = p.run(&[
        "drift",
        "--ignore",
        "aws.vpc.*:tags",
        "--ignore",
        "aws.instance.jenkins_agent_?",
    ]);
    run.code(0)
        .stdout_has(
            "No drift: every resource matches the last apply (2 accepted difference(s) ignored).",
        )
        .stdout_has("aws.vpc.main:tags.Owner modified (by `aws.vpc.*:tags`)")
        .stdout_has("Drift: none; 2 ignored.");
    let doc = p
        .run(&["drift", "--json", "--ignore", "aws.vpc.main:tags.Owner"])
        .json();
    assert_eq!(doc["counts"]["ignored"], 1);
    assert_eq!(doc["counts"]["drifted"], 1);
    let ignored: Vec<&Value> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["ignored"] == true)
        .collect();
    assert_eq!(ignored.len(), 1);
    assert_eq!(ignored[0]["ignored_by"], "aws.vpc.main:tags.Owner");
    let dup = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "duplicate")
        .unwrap();
    assert_eq!(dup["ids"], json!([agent, "i-copy"]));

    // Or in the stack, where a bad pattern names its line.
    p.edit_stack(
        "[stack]",
        "[drift]\nignore = [\"aws.vpc.main:tags\"]\n\n[stack]",
    );
    p.run(&["drift", "--ignore", "aws.instance.*"])
        .code(0)
        .stdout_has("2 ignored");
    p.edit_stack(
        "ignore = [\"aws.vpc.main:tags\"]",
        "ignore = [\"aws.vpc.main:\"]",
    );
    p.run(&["drift"])
        .code(1)
        .stderr_has("smallcase.toml:6:")
        .stderr_has("the attribute path after `:` is empty");
    p.run(&["drift", "--ignore", ":tags"])
        .code(1)
        .stderr_has("--ignore: `:tags` is not a drift pattern");
    // For cron, one document on stdout whatever fails.
    let run = p.run(&["drift", "--json", "--ignore", ":tags"]);
    run.code(1);
    let doc = run.json();
    assert_eq!(doc["result"], "error");
    assert!(
        doc["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not a drift pattern"),
        "{doc}"
    );
    assert_eq!(p.mutating_calls(), 0, "drift must not change anything");
}

#[test]
fn plan_json_is_versioned_and_parseable() {
    let p = Project::reference();
    let run = p.run(&["plan", "--json"]);
    run.success();
    let doc = run.json();
    assert_eq!(doc["format_version"], "2");
    assert_eq!(doc["mode"], "apply");
    assert_eq!(doc["has_changes"], true);
    let vpc = doc["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "aws.vpc.main")
        .unwrap();
    assert_eq!(vpc["action"], "create");
    assert!(
        vpc["after_unknown"]
            .as_array()
            .unwrap()
            .contains(&json!("id"))
    );
    assert_eq!(
        doc["summary"]["add"].as_u64().unwrap() as usize,
        doc["changes"].as_array().unwrap().len()
    );
}

#[test]
fn state_commands_list_show_and_unlock() {
    let p = applied();
    p.run(&["state", "list"])
        .success()
        .stdout_has("aws.vpc.main");
    let show = p.run(&["state", "show", "aws.vpc.main"]);
    show.success().stdout_has("\"cidr_block\": \"10.0.0.0/16\"");
    p.run(&["state", "show", "aws.vpc.nope"])
        .code(1)
        .stderr_has("has no resource `aws.vpc.nope`");
    p.run(&["state", "show", "nope"])
        .code(2)
        .stderr_has("DOMAIN.KIND.NAME");

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p.state_path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(p.path("state/smallcase.json.backup").exists());

    // A live lock from a run on another machine is not taken over; `--force` removes it by id.
    let lock = json!({"id": "abc-123", "user": "jenkins", "host": "agent-7", "pid": 1, "created": "2026-01-01T00:00:00Z", "command": "slipway apply", "ttl_secs": 3_153_600_000u64});
    std::fs::write(p.path("state/smallcase.json.lock"), lock.to_string()).unwrap();
    p.run(&["apply", "--auto-approve"])
        .code(1)
        .stderr_has("jenkins@agent-7")
        .stderr_has("slipway state unlock abc-123");
    p.run(&["state", "unlock", "wrong"])
        .code(1)
        .stderr_has("does not match");
    p.run(&["state", "unlock", "abc-123"])
        .code(1)
        .stderr_has("the lock is live")
        .stderr_has("slipway state unlock abc-123 --force");
    p.run(&["state", "unlock", "abc-123", "--force"]).success();
    p.run(&["apply", "--auto-approve"]).success();
}

#[test]
fn a_broken_or_newer_state_is_refused_and_never_overwritten() {
    let p = applied();
    let good = std::fs::read_to_string(p.state_path()).unwrap();
    std::fs::write(p.state_path(), "{ torn").unwrap();
    p.run(&["plan"])
        .code(1)
        .stderr_has("is not valid slipway state");
    p.run(&["apply", "--auto-approve"]).code(1);
    assert_eq!(std::fs::read_to_string(p.state_path()).unwrap(), "{ torn");

    std::fs::write(
        p.state_path(),
        good.replace("\"format_version\": 2", "\"format_version\": 7"),
    )
    .unwrap();
    p.run(&["apply", "--auto-approve"])
        .code(1)
        .stderr_has("upgrade slipway");
}

#[test]
fn deploy_stage_verbs_need_their_image_and_environment() {
    let p = Project::reference();
    p.run(&["deploy", "--branch", "develop"])
        .code(2)
        .stderr_has("--image-tag");
    p.run(&["deploy", "--image-tag", "develop-1"])
        .code(2)
        .stderr_has("--branch");
    p.run(&["promote", "--from", "green"])
        .code(2)
        .stderr_has("--to");
    p.run(&[
        "deploy",
        "--branch",
        "develop",
        "--image-tag",
        "x",
        "--timeout",
        "soon",
    ])
    .code(2)
    .stderr_has("is not a duration");
}

#[test]
fn graph_prints_dot_and_validate_reports_the_stack() {
    let p = Project::reference();
    p.run(&["graph"])
        .success()
        .stdout_has("digraph \"smallcase\"")
        .stdout_has("\"aws.subnet.public_a\" -> \"aws.vpc.main\";");
    p.run(&["validate"]).success().stdout_has("is valid");
    let doc = p.run(&["validate", "--json"]).json();
    assert_eq!(doc["valid"], true);
}

#[test]
fn stack_selection_and_errors() {
    let p = Project::reference();
    std::fs::copy(p.path("stacks/smallcase.toml"), p.path("stacks/other.toml")).unwrap();
    p.run(&["validate"])
        .code(1)
        .stderr_has("several stack files")
        .stderr_has("--stack");
    p.run(&["validate", "--stack", "stacks/smallcase.toml"])
        .success();
    std::fs::write(
        p.path("stacks/other.toml"),
        "[stack]\nname = \"x\"\nregion = \"ap-south-1\"\nbogus = 1\n",
    )
    .unwrap();
    p.run(&["validate", "--stack", "stacks/other.toml"])
        .code(1)
        .stderr_has("stacks/other.toml:4:1")
        .stderr_has("bogus");
}

#[test]
fn output_has_no_colour_without_a_terminal() {
    let p = Project::reference();
    let run = p.run(&["plan"]);
    assert!(
        !run.stdout.contains('\u{1b}'),
        "escape codes in piped output"
    );
}

#[test]
fn without_credentials_plan_says_so_once_with_a_hint() {
    let p = Project::reference();
    let out = p
        .command(&["plan"])
        .env_remove("SLIPWAY_FAKE_CLOUD")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", p.path("no-such-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", p.path("no-such-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let run = p.finish(&["plan"], out);
    run.code(1)
        .stderr_has("no AWS credentials found")
        .stderr_has("hint: set AWS_PROFILE");
    assert_eq!(
        run.stderr.matches("error:").count(),
        1,
        "one error, not an SDK dump:\n{}",
        run.stderr
    );
}

/// Runs slipway under a pseudo-terminal (util-linux `script`), typing `input`.
fn on_a_terminal(p: &Project, args: &str, input: &str) -> common::Run {
    use std::io::Write as _;
    let cmd = format!("{} {args}", env!("CARGO_BIN_EXE_slipway"));
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(p.dir.path())
        .env("SLIPWAY_FAKE_CLOUD", p.cloud())
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux `script` is needed for terminal tests");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    p.finish(&[args], child.wait_with_output().unwrap())
}

#[test]
fn on_a_terminal_apply_asks_and_only_yes_proceeds() {
    let p = Project::reference();
    let no = on_a_terminal(&p, "apply", "no\n");
    no.stdout_has("Only 'yes' will be accepted")
        .stdout_has("Apply cancelled.");
    assert_eq!(p.object_count(), 0);

    let yes = on_a_terminal(&p, "apply", "yes\n");
    yes.stdout_has("Apply complete!");
    assert!(yes.stdout.contains("\u{1b}[32m"), "colour on a terminal");
    assert!(p.object_count() > 40);

    let no_color = on_a_terminal(&p, "plan --no-color", "");
    assert!(!no_color.stdout.contains("\u{1b}[32m"), "--no-color");
}

#[test]
fn without_a_terminal_long_operations_say_they_are_still_going() {
    let p = Project::reference();
    p.edit_world(|w| w["faults"] = json!({"delay_ms": 50}));
    // The default interval (30 s) is longer than this whole apply.
    let quiet = p.run(&["apply", "--auto-approve"]);
    quiet.success();
    assert!(!quiet.stdout.contains("still creating"), "{}", quiet.stdout);

    p.run(&["destroy", "--auto-approve", "--allow-protected"])
        .success();
    let out = p
        .command(&["apply", "--auto-approve"])
        .env("SLIPWAY_PROGRESS_INTERVAL", "0")
        .output()
        .unwrap();
    p.finish(&["apply"], out)
        .success()
        .stdout_has("aws.vpc.main: still creating... [")
        .stdout_has("elapsed] waiting until ready");

    let out = p
        .command(&["plan"])
        .env("SLIPWAY_PROGRESS_INTERVAL", "soon")
        .output()
        .unwrap();
    let run = p.finish(&["plan"], out);
    run.success();
    assert!(
        !run.stderr.contains("SLIPWAY_PROGRESS_INTERVAL"),
        "plan shows no progress, so it does not read the interval: {}",
        run.stderr
    );
    let out = p
        .command(&["destroy", "--auto-approve", "--allow-protected"])
        .env("SLIPWAY_PROGRESS_INTERVAL", "soon")
        .output()
        .unwrap();
    p.finish(&["destroy"], out)
        .success()
        .stderr_has("SLIPWAY_PROGRESS_INTERVAL=`soon` is not a number of seconds");
}

#[test]
fn an_empty_lock_file_is_recoverable() {
    let p = applied();
    let lock = p.path("state/smallcase.json.lock");
    // What a run of an earlier version left when it died between creating and writing the lock.
    std::fs::write(&lock, "").unwrap();
    p.run(&["state", "lock"])
        .code(1)
        .stderr_has("smallcase.json.lock` is unreadable (empty)")
        .stderr_has("slipway state unlock --force");
    let json = p.run(&["--json", "state", "lock"]);
    json.code(1);
    assert_eq!(json.json(), json!({"locked": true, "unreadable": "empty"}));
    p.run(&["apply", "--auto-approve"])
        .code(1)
        .stderr_has("is unreadable (empty)")
        .stderr_has("hint:");
    p.run(&["state", "unlock"]).code(2);
    p.run(&["state", "unlock", "--force"])
        .success()
        .stdout_has("Removed the unreadable lock file");
    assert!(!lock.exists());
    p.run(&["apply", "--auto-approve"]).success();

    // A lock of an earlier version, from another host, expires 30 s after it was taken.
    let old = json!({"id": "abc-123", "user": "jenkins", "host": "agent-7", "pid": 1, "created": "2026-01-01T00:00:00Z", "command": "slipway apply"});
    std::fs::write(&lock, old.to_string()).unwrap();
    p.run(&["state", "lock"])
        .success()
        .stdout_has("jenkins@agent-7")
        .stdout_has("stale: not renewed within its 30s lease");
    p.run(&["apply", "--auto-approve"])
        .success()
        .stderr_has("took over a stale lock");
    assert!(!lock.exists());
}
