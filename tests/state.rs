//! The S3 state backend against the local AWS: the lock (one winner among
//! concurrent runs, leases that go stale, releases that remove only what
//! they read), conditional state writes, `init-backend`, `migrate`, and
//! read-only commands that never wait for the lock. The platform itself is
//! the simulated cloud; only the state lives in (local) S3.

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::localaws::LocalAws;
use common::{Project, finished, send_signal, spawn};

const BUCKET: &str = "smallcase-state";
const KEY: &str = "smallcase/slipway.state.json";
const LOCK: &str = "smallcase/slipway.state.json.lock";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Adds `[state]` with the S3 backend on `bucket` to the project's stack.
fn keep_state_in(p: &Project, bucket: &str) {
    let stack = std::fs::read_to_string(p.path("stacks/smallcase.toml")).unwrap();
    std::fs::write(
        p.path("stacks/smallcase.toml"),
        format!("{stack}\n[state]\nbackend = \"s3\"\nbucket = \"{bucket}\"\n"),
    )
    .unwrap();
}

/// The reference stack on the simulated cloud, with its state in the local
/// AWS's S3 (the bucket made by `state init-backend`).
fn on_s3(aws: &LocalAws) -> Project {
    let mut p = Project::reference();
    p.env = aws.env();
    keep_state_in(&p, BUCKET);
    p.run(&["state", "init-backend"]).success();
    p
}

fn get(aws: &LocalAws, key: &str) -> Option<(Vec<u8>, String)> {
    rt().block_on(async {
        match aws.s3().get_object().bucket(BUCKET).key(key).send().await {
            Ok(out) => {
                let etag = out.e_tag().unwrap_or_default().to_string();
                let body = out.body.collect().await.unwrap().into_bytes().to_vec();
                Some((body, etag))
            }
            Err(_) => None,
        }
    })
}

fn put(aws: &LocalAws, key: &str, body: &[u8]) {
    rt().block_on(async {
        aws.s3()
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(body.to_vec().into())
            .send()
            .await
            .unwrap();
    });
}

/// slipway's S3 backend on the local AWS, as a run would open it.
fn backend(aws: &LocalAws) -> slipway::state::S3Backend {
    slipway::state::S3Backend::with_config(
        slipway::state::s3::S3Location {
            bucket: BUCKET.into(),
            key: KEY.into(),
            region: "ap-south-1".into(),
            kms_key_id: None,
        },
        &aws.sdk_config(),
    )
    .unwrap()
}

fn stored_state(aws: &LocalAws) -> Value {
    let (body, _) = get(aws, KEY).expect("a state object");
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn init_backend_makes_a_versioned_encrypted_private_tls_only_bucket_and_is_idempotent() {
    let aws = LocalAws::start(&[]);
    let p = on_s3(&aws);
    // Again: nothing breaks, nothing is duplicated.
    p.run(&["state", "init-backend"])
        .success()
        .stdout_has("bucket `smallcase-state` exists (yours)");
    let s3 = aws.s3();
    rt().block_on(async {
        let v = s3
            .get_bucket_versioning()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
        assert_eq!(v.status().map(|s| s.as_str()), Some("Enabled"));
        let e = s3
            .get_bucket_encryption()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
        let rule = &e.server_side_encryption_configuration().unwrap().rules()[0];
        assert_eq!(
            rule.apply_server_side_encryption_by_default()
                .unwrap()
                .sse_algorithm()
                .as_str(),
            "AES256"
        );
        let block = s3
            .get_public_access_block()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
        let c = block.public_access_block_configuration().unwrap();
        assert_eq!(
            (
                c.block_public_acls(),
                c.ignore_public_acls(),
                c.block_public_policy(),
                c.restrict_public_buckets()
            ),
            (Some(true), Some(true), Some(true), Some(true))
        );
        let policy = s3.get_bucket_policy().bucket(BUCKET).send().await.unwrap();
        let policy: Value = serde_json::from_str(policy.policy().unwrap()).unwrap();
        let tls: Vec<&Value> = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["Sid"] == "SlipwayDenyInsecureTransport")
            .collect();
        assert_eq!(
            tls.len(),
            1,
            "one TLS statement however often it runs: {policy}"
        );
        assert_eq!(tls[0]["Effect"], "Deny");
        assert_eq!(
            tls[0]["Condition"],
            json!({"Bool": {"aws:SecureTransport": "false"}})
        );
        let life = s3
            .get_bucket_lifecycle_configuration()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
        let ours: Vec<_> = life
            .rules()
            .iter()
            .filter(|r| {
                r.id()
                    .is_some_and(|i| i.starts_with("slipway-lock-versions:"))
            })
            .collect();
        assert_eq!(ours.len(), 1);
        assert_eq!(
            ours[0]
                .noncurrent_version_expiration()
                .and_then(|n| n.noncurrent_days()),
            Some(1)
        );
    });
}

#[test]
fn eight_concurrent_applies_one_proceeds_every_other_names_the_holder() {
    let aws = LocalAws::start(&[]);
    let p = on_s3(&aws);
    p.edit_world(|w| w["faults"] = json!({"delay_ms": 300}));
    let children: Vec<_> = (0..8)
        .map(|_| spawn(&p, &["apply", "--auto-approve"]))
        .collect();
    let runs: Vec<_> = children
        .into_iter()
        .map(|c| finished(&p, &["apply", "--auto-approve"], c))
        .collect();
    let winners = runs.iter().filter(|r| r.code == 0).count();
    assert_eq!(
        winners,
        1,
        "exactly one proceeds: {:#?}",
        runs.iter().map(|r| (r.code, &r.stderr)).collect::<Vec<_>>()
    );
    for r in runs.iter().filter(|r| r.code != 0) {
        r.code(1)
            .stderr_has("apply --auto-approve` by ")
            .stderr_has("(held for ")
            .stderr_has("lock id `");
    }
    assert!(get(&aws, LOCK).is_none(), "the winner released the lock");
    assert_eq!(
        stored_state(&aws)["serial"].as_u64().map(|s| s > 0),
        Some(true)
    );
    p.edit_world(|w| w["faults"] = json!({}));
    p.run(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_killed_run_leaves_a_lock_that_goes_stale_and_unlock_force_clears_it() {
    let aws = LocalAws::start(&[]);
    let mut p = on_s3(&aws);
    p.env.push(("SLIPWAY_LOCK_TTL_SECS", "3".into()));
    p.edit_world(|w| w["faults"] = json!({"delay_ms": 500}));
    let mut child = spawn(&p, &["apply", "--auto-approve"]);
    wait_for("the lock", || get(&aws, LOCK).is_some());
    child.kill().unwrap();
    child.wait().unwrap();
    let (body, _) = get(&aws, LOCK).expect("SIGKILL releases nothing");
    let held: Value = serde_json::from_slice(&body).unwrap();
    let id = held["id"].as_str().unwrap().to_string();

    // As another host would see it: rewrite the holder's host, so only the
    // lease can tell it is stale.
    let mut other = held.clone();
    other["host"] = json!("ci-agent-9");
    put(&aws, LOCK, other.to_string().as_bytes());
    p.edit_world(|w| w["faults"] = json!({}));
    p.run(&["apply", "--auto-approve"])
        .code(1)
        .stderr_has("apply --auto-approve` by ")
        .stderr_has("@ci-agent-9");
    wait_for("the lease to run out", || {
        let r = p.run(&["state", "lock", "--json"]);
        r.json()["stale"] == json!(true)
    });
    let status = p.run(&["state", "lock"]);
    status
        .success()
        .stdout_has("stale: not renewed within its 3s lease")
        .stdout_has("renewed ");
    p.run(&["state", "unlock", &id, "--force"])
        .success()
        .stdout_has("Removed the lock held by");
    p.run(&["state", "lock"])
        .success()
        .stdout_has("Not locked.");
    // A rerun converges from what the killed run recorded.
    p.run(&["apply", "--auto-approve"]).success();
    p.run(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_stale_lock_is_taken_over_and_a_live_one_is_released_only_by_its_holder() {
    let aws = LocalAws::start(&[]);
    let p = on_s3(&aws);
    let stale = json!({
        "id": "0000-stale", "user": "jenkins", "host": "ci-agent-3", "pid": 4242,
        "created": "2026-01-01T00:00:00Z", "renewed": "2026-01-01T00:00:00Z",
        "command": "slipway apply --auto-approve", "ttl_secs": 3, "pid_namespace": ""
    });
    put(&aws, LOCK, stale.to_string().as_bytes());
    // Not renewed for months (by S3's clock too, once it is old enough).
    std::thread::sleep(Duration::from_secs(4));
    p.run(&["apply", "--auto-approve"])
        .success()
        .stderr_has("0000-stale");
    assert!(get(&aws, LOCK).is_none());

    // A live lock of someone else's: `unlock` without --force refuses.
    let mut live = stale.clone();
    live["id"] = json!("1111-live");
    live["created"] = json!(slipway_now());
    live["renewed"] = json!(slipway_now());
    live["ttl_secs"] = json!(3600);
    put(&aws, LOCK, live.to_string().as_bytes());
    p.run(&["state", "unlock", "1111-live"])
        .code(1)
        .stderr_has("the lock is live");
    p.run(&["state", "unlock", "9999-other", "--force"])
        .code(1)
        .stderr_has("does not match the lock held");
    assert!(get(&aws, LOCK).is_some());
    p.run(&["state", "unlock", "1111-live", "--force"])
        .success();
    assert!(get(&aws, LOCK).is_none());
}

fn slipway_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_write_whose_etag_no_longer_matches_is_refused_and_the_stored_state_is_unchanged() {
    let aws = LocalAws::start(&[]);
    let p = on_s3(&aws);
    p.run(&["apply", "--auto-approve"]).success();
    let backend = backend(&aws);
    let mut state = backend.load_opt("smallcase").unwrap().unwrap();
    // Someone else writes meanwhile (a run whose lock was broken).
    let (theirs, _) = get(&aws, KEY).unwrap();
    let mut changed: Value = serde_json::from_slice(&theirs).unwrap();
    changed["last_applied_plan"] = json!("someone-else");
    let theirs = serde_json::to_vec_pretty(&changed).unwrap();
    put(&aws, KEY, &theirs);

    let serial = state.serial();
    let err = backend.write(&mut state).unwrap_err().to_string();
    assert!(err.contains("changed underneath this run"), "{err}");
    assert!(
        err.contains("s3://smallcase-state/smallcase/slipway.state.json"),
        "{err}"
    );
    assert_eq!(state.serial(), serial, "the serial is not advanced");
    assert_eq!(get(&aws, KEY).unwrap().0, theirs, "nothing was overwritten");

    // Read again, the write goes through.
    let mut state = backend.load_opt("smallcase").unwrap().unwrap();
    backend.write(&mut state).unwrap();
    assert_eq!(stored_state(&aws)["serial"], json!(serial + 1));
}

#[test]
fn migrate_local_to_s3_and_back_keeps_serial_lineage_and_resources() {
    let aws = LocalAws::start(&[]);
    let mut p = Project::reference();
    p.env = aws.env();
    p.run(&["apply", "--auto-approve"]).success();
    let local: Value = p.state();

    keep_state_in(&p, BUCKET);
    p.run(&["state", "init-backend"]).success();
    // Not migrated yet: a plan from an empty S3 state is refused.
    p.run(&["plan"])
        .code(1)
        .stderr_has("holds a local state for it")
        .stderr_has("slipway state migrate --to s3");
    p.run(&["state", "migrate", "--to", "s3"])
        .success()
        .stdout_has("Moved the state");
    assert_eq!(
        stored_state(&aws),
        local,
        "the same state, byte for byte in meaning"
    );
    // All that differs is what the stack's new `[state]` adds: the drift
    // job may read the state object.
    let plan = p.run(&["plan", "--json"]);
    let changed: Vec<String> = plan.json()["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] != "no-op")
        .map(|c| c["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(changed, ["aws.iam_role_policy.drift_read"]);
    // Again: already there.
    p.run(&["state", "migrate", "--to", "s3"])
        .success()
        .stdout_has("already holds this state");

    // A change applied to the S3 state, then back to local.
    p.edit_stack("keep_images  = 30", "keep_images  = 31");
    p.run(&["apply", "--auto-approve"]).success();
    let remote = stored_state(&aws);
    assert!(remote["serial"].as_u64() > local["serial"].as_u64());
    assert_eq!(remote["lineage"], local["lineage"]);
    p.run(&["state", "migrate", "--to", "local"]).success();
    assert_eq!(p.state(), remote);

    // The same serial with other contents: diverged, refused.
    let mut diverged = remote.clone();
    diverged["last_applied_plan"] = json!("someone-else");
    std::fs::write(p.state_path(), diverged.to_string()).unwrap();
    p.run(&["state", "migrate", "--to", "local"])
        .code(1)
        .stderr_has("have diverged");
    assert_eq!(p.state(), diverged);

    // Another history at the destination is never overwritten.
    let mut foreign = remote.clone();
    foreign["lineage"] = json!("00000000-0000-0000-0000-000000000000");
    std::fs::write(p.state_path(), foreign.to_string()).unwrap();
    p.run(&["state", "migrate", "--to", "local"])
        .code(1)
        .stderr_has("holds another state");
    assert_eq!(p.state(), foreign);
}

#[test]
fn drift_and_plan_run_while_an_apply_holds_the_lock() {
    let aws = LocalAws::start(&[]);
    let p = on_s3(&aws);
    p.run(&["apply", "--auto-approve"]).success();
    p.edit_stack("keep_images  = 30", "keep_images  = 31");
    // The update takes 20 s, far longer than drift and plan even on a
    // loaded machine, so both surely run while the apply holds the lock.
    p.edit_world(|w| w["faults"] = json!({"delay_ms": 20_000}));
    let child = spawn(&p, &["apply", "--auto-approve"]);
    wait_for("the lock", || get(&aws, LOCK).is_some());
    // Read-only: no lock taken, none waited for (they finish while the
    // apply still holds it).
    p.run(&["drift"]).code(0);
    p.run(&["plan"])
        .success()
        .stdout_has("aws.ecr_lifecycle_policy.app");
    assert!(get(&aws, LOCK).is_some(), "the apply still holds it");
    let run = finished(&p, &["apply", "--auto-approve"], child);
    run.success();
    // SIGINT on a run holding an S3 lock releases it.
    p.edit_world(|w| w["faults"] = json!({"delay_ms": 2000}));
    p.edit_stack("keep_images  = 31", "keep_images  = 32");
    let child = spawn(&p, &["apply", "--auto-approve"]);
    wait_for("the lock", || get(&aws, LOCK).is_some());
    send_signal(child.id(), "INT");
    let run = finished(&p, &["apply", "--auto-approve"], child);
    assert_eq!(run.code, 130, "{}", run.stderr);
    assert!(get(&aws, LOCK).is_none(), "released on SIGINT");
}

#[test]
fn a_conditional_write_whose_answer_was_lost_is_recognised_as_ours() {
    let aws = LocalAws::start(&[]);
    let p = on_s3(&aws);
    let lose_next_put = || {
        aws.configure(json!({"faults": {"rate": 1.0, "kinds": ["lost_response"], "operations": ["PutObject"], "max": 1}}));
    };
    // The lock's create lands, its answer is lost, the SDK sends it again
    // and that fails its precondition: the lock found is this run's own.
    let lost = |aws: &LocalAws| {
        aws.calls()["calls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["operation"] == "PutObject")
            .map(|c| c["faults"].as_u64().unwrap())
            .sum::<u64>()
    };
    lose_next_put();
    p.run(&["apply", "--auto-approve"]).success();
    assert_eq!(lost(&aws), 1, "the fault was injected");
    assert!(get(&aws, LOCK).is_none());
    aws.configure(json!({"faults": {"rate": 0.0}}));

    // A state write, the same way: not a conflict.
    let backend = backend(&aws);
    let mut state = backend.load_opt("smallcase").unwrap().unwrap();
    let serial = state.serial();
    lose_next_put();
    backend.write(&mut state).unwrap();
    aws.configure(json!({"faults": {"rate": 0.0}}));
    assert_eq!(lost(&aws), 2, "the fault was injected");
    assert_eq!(stored_state(&aws)["serial"], json!(serial + 1));
    // And the next write goes on from the version that landed.
    backend.write(&mut state).unwrap();
    assert_eq!(stored_state(&aws)["serial"], json!(serial + 2));
}

#[test]
fn a_renewal_whose_answer_was_lost_keeps_the_lock_and_a_broken_lock_is_noticed() {
    let aws = LocalAws::start(&[]);
    let _p = on_s3(&aws);
    let b = backend(&aws);
    // Renewed every 3 s; unconfirmed for 6 s it would count as lost, which
    // a loaded machine's retried renewal stays well inside.
    let guard = b.lock("test", Duration::from_secs(9)).unwrap();
    // The next renewal lands, its answer is lost, the SDK sends it again.
    aws.configure(json!({"faults": {"rate": 1.0, "kinds": ["lost_response"], "operations": ["PutObject"], "max": 1}}));
    std::thread::sleep(Duration::from_millis(4500));
    aws.configure(json!({"faults": {"rate": 0.0}}));
    assert!(!guard.lost(), "still ours");
    let (body, _) = get(&aws, LOCK).unwrap();
    let held: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(held["id"], guard.info().id.as_str());
    // Broken by `state unlock --force` elsewhere: the next renewal says so.
    b.unlock(Some(&guard.info().id), true).unwrap();
    wait_for("the heartbeat to notice", || guard.lost());
    drop(guard);
    assert!(get(&aws, LOCK).is_none(), "and it put nothing back");
}

#[test]
fn a_missing_bucket_is_an_error_never_an_empty_state() {
    let aws = LocalAws::start(&[]);
    let mut p = Project::reference();
    p.env = aws.env();
    keep_state_in(&p, "no-such-bucket");
    p.run(&["plan"])
        .code(1)
        .stderr_has("NoSuchBucket")
        .stderr_has("slipway state init-backend");
}

#[test]
fn init_backend_keeps_what_the_bucket_already_has() {
    let aws = LocalAws::start(&[]);
    let s3 = aws.s3();
    rt().block_on(async {
        s3.create_bucket()
            .bucket(BUCKET)
            .create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::ApSouth1)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        s3.put_bucket_encryption()
            .bucket(BUCKET)
            .server_side_encryption_configuration(
                aws_sdk_s3::types::ServerSideEncryptionConfiguration::builder()
                    .rules(
                        aws_sdk_s3::types::ServerSideEncryptionRule::builder()
                            .apply_server_side_encryption_by_default(
                                aws_sdk_s3::types::ServerSideEncryptionByDefault::builder()
                                    .sse_algorithm(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                                    .kms_master_key_id("alias/org-mandated")
                                    .build()
                                    .unwrap(),
                            )
                            .build(),
                    )
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let policy = json!({"Version": "2012-10-17", "Statement": [{
            "Sid": "AuditRead", "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
            "Action": "s3:GetObject", "Resource": format!("arn:aws:s3:::{BUCKET}/*")}]});
        s3.put_bucket_policy()
            .bucket(BUCKET)
            .policy(policy.to_string())
            .send()
            .await
            .unwrap();
        s3.put_bucket_lifecycle_configuration()
            .bucket(BUCKET)
            .lifecycle_configuration(
                aws_sdk_s3::types::BucketLifecycleConfiguration::builder()
                    .rules(
                        aws_sdk_s3::types::LifecycleRule::builder()
                            .id("org-logs")
                            .status(aws_sdk_s3::types::ExpirationStatus::Enabled)
                            .filter(
                                aws_sdk_s3::types::LifecycleRuleFilter::builder()
                                    .prefix("logs/")
                                    .build(),
                            )
                            .expiration(
                                aws_sdk_s3::types::LifecycleExpiration::builder()
                                    .days(90)
                                    .build(),
                            )
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    });
    let p = on_s3(&aws);
    p.run(&["state", "init-backend"])
        .success()
        .stdout_has("default encryption kept: aws:kms with `alias/org-mandated`");
    rt().block_on(async {
        let policy = s3.get_bucket_policy().bucket(BUCKET).send().await.unwrap();
        let policy: Value = serde_json::from_str(policy.policy().unwrap()).unwrap();
        let sids: Vec<&str> = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["Sid"].as_str())
            .collect();
        assert_eq!(sids, ["AuditRead", "SlipwayDenyInsecureTransport"]);
        let life = s3
            .get_bucket_lifecycle_configuration()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
        let ids: Vec<&str> = life.rules().iter().filter_map(|r| r.id()).collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert_eq!(ids[0], "org-logs");
    });
}
