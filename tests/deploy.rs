//! The deploy stage against the local AWS (images put into ECR through the
//! API) and the Kubernetes test server (rollouts, the ALB controller's
//! target groups and readiness gates): branches land in their namespaces
//! pinned by digest, the promotion policy holds, promotion re-tags without
//! moving a layer, rollback restores, pruning removes only what the overlay
//! dropped, failures name the pod's reason, deploys to one environment
//! never interleave.

mod common;

use std::path::Path;
use std::process::Command;

use common::kubetest::KubeTest;
use common::localaws::LocalAws;
use common::{Project, Run};
use serde_json::{Value, json};

const REPO: &str = "smallcase/app";

fn put_image(aws: &LocalAws, tag: &str, seed: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/put-image"))
        .args(["--repository", REPO, "--tag", tag, "--seed", seed])
        .envs(aws.env())
        .output()
        .expect("scripts/put-image runs");
    assert!(
        out.status.success(),
        "put-image failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The platform, applied: namespaces, the controller, its CRDs.
fn platform(stack_edit: Option<(&str, &str)>) -> (LocalAws, KubeTest, Project) {
    let aws = LocalAws::start(&["--time-scale", "0.002"]);
    let kube = KubeTest::start(&aws.endpoint);
    kube.seed_eks_defaults();
    let p = Project::platform_on(&aws, &kube);
    if let Some((from, to)) = stack_edit {
        p.edit_stack(from, to);
    }
    p.run(&["apply", "--auto-approve"])
        .success()
        .stdout_has("Apply complete!");
    (aws, kube, p)
}

fn image_of(kube: &KubeTest, ns: &str) -> Option<String> {
    kube.get(&["-n", ns, "deployment", "app"]).map(|d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    })
}

fn releases(p: &Project, env: &str) -> Vec<Value> {
    p.run(&["releases", "--env", env, "--json"])
        .success()
        .json()["releases"]
        .as_array()
        .unwrap()
        .clone()
}

fn deploy(p: &Project, args: &[&str]) -> Run {
    let mut all = vec!["deploy", "--timeout", "90s"];
    all.extend_from_slice(args);
    p.run(&all)
}

#[test]
fn branches_land_in_their_namespaces_and_only_verified_digests_reach_production() {
    let (aws, kube, p) = platform(None);
    let a = put_image(&aws, "develop-aaaaaaa", "a");

    // develop: its own namespace, the image pinned by digest, nothing else touched.
    let run = deploy(
        &p,
        &[
            "--branch",
            "develop",
            "--image-tag",
            "develop-aaaaaaa",
            "--commit",
            "aaaaaaa1234",
        ],
    );
    run.success().stdout_has("Deployed release 1 of `develop`");
    let image = image_of(&kube, "smallcase-develop").unwrap();
    assert!(image.ends_with(&format!("/{REPO}@{a}")), "{image}");
    assert!(image_of(&kube, "smallcase-green").is_none());
    assert!(image_of(&kube, "smallcase-blue").is_none());
    let d = kube
        .get(&[
            "-n",
            "smallcase-develop",
            "deployment",
            "app",
            "--show-managed-fields",
        ])
        .unwrap();
    let managers: Vec<&str> = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(
        managers.contains(&"slipway-deploy") && !managers.contains(&"slipway"),
        "{managers:?}"
    );
    assert!(
        d["metadata"]["labels"]["applyset.kubernetes.io/part-of"]
            .as_str()
            .unwrap()
            .starts_with("applyset-")
    );
    // A deploy ends when the ALB's targets are the new pods, healthy.
    assert!(
        run.stdout.contains("every new pod a healthy target"),
        "{}",
        run.stdout
    );
    let r = &releases(&p, "develop")[0];
    assert_eq!(r["result"], "succeeded");
    assert_eq!(r["verified"], true);
    assert_eq!(r["digest"], a.as_str());
    assert_eq!(r["commit"], "aaaaaaa1234");
    assert!(
        r["address"]
            .as_str()
            .unwrap()
            .ends_with(".elb.amazonaws.com")
    );
    // The platform does not see the application's objects.
    p.run(&["plan", "--detailed-exitcode"]).code(0);

    // Straight to production: refused, saying where the digest has been.
    let refused = deploy(&p, &["--branch", "master", "--image-digest", &a, "--yes"]);
    refused
        .code(1)
        .stderr_has("`green`: never")
        .stderr_has("`develop`: revision 1 succeeded (verified)");
    assert!(image_of(&kube, "smallcase-blue").is_none());

    // staging takes what develop verified; master takes it from green by promotion.
    deploy(
        &p,
        &[
            "--branch",
            "staging",
            "--image-tag",
            "develop-aaaaaaa",
            "--commit",
            "aaaaaaa1234",
        ],
    )
    .success();
    let puts = aws.calls_of("PutImage");
    let uploads = aws.calls_of("InitiateLayerUpload") + aws.calls_of("UploadLayerPart");
    p.run(&[
        "promote",
        "--from",
        "green",
        "--to",
        "blue",
        "--yes",
        "--timeout",
        "90s",
    ])
    .success()
    .stdout_has("Deployed release 1 of `blue`");
    assert_eq!(
        aws.calls_of("PutImage"),
        puts + 1,
        "one registry-side re-tag"
    );
    assert_eq!(
        aws.calls_of("InitiateLayerUpload") + aws.calls_of("UploadLayerPart"),
        uploads,
        "no layer moved"
    );
    assert_eq!(
        image_of(&kube, "smallcase-blue"),
        image_of(&kube, "smallcase-green")
    );
    let blue = &releases(&p, "blue")[0];
    assert_eq!(blue["kind"], "promote");
    assert_eq!(blue["promoted_from"]["environment"], "green");
    assert_eq!(blue["tag"], "master-aaaaaaa");

    // A newer develop image, forced into blue: allowed, and recorded.
    let b = put_image(&aws, "develop-bbbbbbb", "b");
    deploy(
        &p,
        &["--branch", "develop", "--image-tag", "develop-bbbbbbb"],
    )
    .success();
    deploy(&p, &["--env", "blue", "--image-digest", &b, "--yes"]).code(1);
    deploy(
        &p,
        &["--env", "blue", "--image-digest", &b, "--force", "--yes"],
    )
    .code(1)
    .stderr_has("--reason");
    deploy(
        &p,
        &[
            "--env",
            "blue",
            "--image-digest",
            &b,
            "--force",
            "--reason",
            "hotfix INC-1",
            "--yes",
        ],
    )
    .success();
    let blue = releases(&p, "blue");
    assert_eq!(blue[1]["forced"], true);
    assert_eq!(blue[1]["reason"], "hotfix INC-1");
    assert!(image_of(&kube, "smallcase-blue").unwrap().ends_with(&b));

    // Rollback restores the previous digest, and is recorded as one.
    p.run(&["rollback", "--env", "blue", "--yes", "--timeout", "90s"])
        .success();
    assert!(image_of(&kube, "smallcase-blue").unwrap().ends_with(&a));
    let blue = releases(&p, "blue");
    assert_eq!(blue[2]["kind"], "rollback");
    assert_eq!(blue[2]["rollback_to"], 1);
    assert_eq!(blue[1]["result"], "rolled_back");
    let text = p
        .run(&["releases", "--env", "blue"])
        .success()
        .stdout
        .clone();
    assert!(
        text.contains("FORCED: hotfix INC-1") && text.contains("rollback"),
        "{text}"
    );

    // Unmapped branches and missing images are clear errors.
    deploy(&p, &["--branch", "feature/x", "--image-tag", "x"])
        .code(1)
        .stderr_has("`master` → `blue`");
    deploy(&p, &["--branch", "develop", "--image-tag", "nope"])
        .code(1)
        .stderr_has("has no image with tag `nope`")
        .stderr_has("ap-south-1");
}

/// `kubectl apply --server-side` of one object (kubetest speaks JSON, not
/// the protobuf `kubectl create` sends).
fn kube_apply(kube: &KubeTest, obj: Value) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("obj.json");
    std::fs::write(&f, obj.to_string()).unwrap();
    let out = kube.kubectl(&["apply", "--server-side", "-f", f.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn kubetest_config(kube: &KubeTest, config: Value) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.json");
    std::fs::write(&f, config.to_string()).unwrap();
    let out = kube.kubectl(&[
        "create",
        "--raw",
        "/_kubetest/config",
        "-f",
        f.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn failures_prune_dry_run_moved_tags_and_the_lock() {
    let (aws, kube, p) = platform(Some((
        "keep_images  = 30",
        "keep_images  = 30\ntag_mutability = \"MUTABLE\"",
    )));
    let ns = "smallcase-develop";

    // kubectl is checked before anything is changed.
    let mut c = p.command(&["deploy", "--branch", "develop", "--image-tag", "x"]);
    let out = c
        .env("SLIPWAY_KUBECTL", "/nonexistent/kubectl")
        .output()
        .unwrap();
    p.finish(&["deploy"], out)
        .code(1)
        .stderr_has("install kubectl 1.22");

    // An extra object in the overlay, deployed; an unrelated object beside it.
    std::fs::write(
        p.path("k8s/base/settings.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  greeting: hello\n",
    )
    .unwrap();
    let kustomization = p.path("k8s/base/kustomization.yaml");
    let base = std::fs::read_to_string(&kustomization).unwrap();
    std::fs::write(
        &kustomization,
        base.replace(
            "  - ingress.yaml\n",
            "  - ingress.yaml\n  - settings.yaml\n",
        ),
    )
    .unwrap();
    let first = put_image(&aws, "develop-1111111", "one");
    deploy(
        &p,
        &["--branch", "develop", "--image-tag", "develop-1111111"],
    )
    .success();
    assert!(kube.get(&["-n", ns, "configmap", "settings"]).is_some());
    kube_apply(
        &kube,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "unrelated", "namespace": ns}, "data": {"a": "b"}}),
    );

    kube_apply(
        &kube,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "garbled-record", "namespace": ns,
                            "labels": {"slipway.dev/release-of": "develop", "slipway.dev/revision": "90"}},
               "data": {"release.json": "{ torn"}}),
    );

    // Dry run: the diff, nothing changed.
    std::fs::write(&kustomization, &base).unwrap();
    let moved = put_image(&aws, "develop-1111111", "two");
    assert_ne!(moved, first);
    let dry = deploy(
        &p,
        &[
            "--branch",
            "develop",
            "--image-tag",
            "develop-1111111",
            "--dry-run",
        ],
    );
    let dry = dry
        .success()
        .stdout_has(&moved)
        .stdout_has("ConfigMap/settings (pruned")
        .stdout_has("nothing was changed");
    // The record this slipway cannot read is said once, after the image.
    let out = &dry.stdout;
    assert_eq!(out.matches("skipping a release record").count(), 1, "{out}");
    let image_at = out.find(&format!("@{moved}")).unwrap();
    assert!(
        out.find("skipping a release record").unwrap() > image_at,
        "{out}"
    );
    let deleted = kube.kubectl(&["-n", ns, "delete", "configmap", "garbled-record"]);
    assert!(deleted.status.success());
    assert!(image_of(&kube, ns).unwrap().ends_with(&first));
    assert!(kube.get(&["-n", ns, "configmap", "settings"]).is_some());

    // The tag moved to a new digest: it rolls out; the dropped object is
    // pruned, the unrelated one survives.
    deploy(
        &p,
        &["--branch", "develop", "--image-tag", "develop-1111111"],
    )
    .success();
    assert!(image_of(&kube, ns).unwrap().ends_with(&moved));
    assert!(kube.get(&["-n", ns, "configmap", "settings"]).is_none());
    assert!(kube.get(&["-n", ns, "configmap", "unrelated"]).is_some());

    // A rollout that fails names the pod's reason, exits 1, is recorded failed.
    let bad = put_image(&aws, "develop-2222222", "crash");
    let bad_image = format!("123456789012.dkr.ecr.ap-south-1.amazonaws.com/{REPO}@{bad}");
    kubetest_config(&kube, json!({"crashing_images": [bad_image]}));
    let run = deploy(
        &p,
        &["--branch", "develop", "--image-tag", "develop-2222222"],
    );
    run.code(1).stderr_has("CrashLoopBackOff");
    let history = releases(&p, "develop");
    let last = history.last().unwrap();
    assert_eq!(last["result"], "failed");
    assert_eq!(last["verified"], false);
    // The old pods still serve.
    let pods = kube.get(&["-n", ns, "pods"]).unwrap();
    assert!(pods["items"].as_array().unwrap().iter().any(|p| {
        p["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .ends_with(&moved)
            && p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    }));
    // A failed release vouches for nothing downstream.
    deploy(&p, &["--branch", "staging", "--image-digest", &bad])
        .code(1)
        .stderr_has("revision 3 failed (not verified)");

    // Traffic decides: while the load balancer finds the new pods unhealthy
    // the deploy does not finish, and at its timeout it fails saying so.
    aws.configure(json!({"unhealthy_targets": ["10.0.0.0/8"]}));
    let sick = put_image(&aws, "develop-3333333", "sick");
    p.run(&[
        "deploy",
        "--branch",
        "develop",
        "--image-digest",
        &sick,
        "--timeout",
        "8s",
    ])
    .code(1)
    .stderr_has("readiness gate");
    aws.configure(json!({"unhealthy_targets": []}));
    assert!(image_of(&kube, ns).unwrap().ends_with(&sick));
    assert_eq!(releases(&p, "develop").last().unwrap()["result"], "failed");

    // One deploy per environment: a held lease makes the next one wait, then fail naming the holder.
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "slipway-deploy", "namespace": ns},
        "spec": {"holderIdentity": "jenkins@agent-1 (pid 7)", "leaseDurationSeconds": 3600,
                 "acquireTime": "2026-01-01T00:00:00.000000Z", "renewTime": "2099-01-01T00:00:00.000000Z"}});
    kube_apply(&kube, lease);
    deploy(
        &p,
        &[
            "--branch",
            "develop",
            "--image-digest",
            &first,
            "--lock-timeout",
            "1s",
        ],
    )
    .code(1)
    .stderr_has("held by jenkins@agent-1 (pid 7)");
    assert!(
        kube.kubectl(&["-n", ns, "delete", "lease", "slipway-deploy"])
            .status
            .success()
    );

    // Two at once never interleave: one waits for the other's lease.
    let spawn = |digest: &str| {
        p.command(&[
            "deploy",
            "--timeout",
            "90s",
            "--branch",
            "develop",
            "--image-digest",
            digest,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
    };
    let one = spawn(&first);
    let two = spawn(&moved);
    let (one, two) = (
        one.wait_with_output().unwrap(),
        two.wait_with_output().unwrap(),
    );
    let one = p.finish(&["deploy (first of two)"], one);
    let two = p.finish(&["deploy (second of two)"], two);
    one.success();
    two.success();
    assert!(
        one.stdout.contains("waiting for the deploy lock")
            || two.stdout.contains("waiting for the deploy lock"),
        "neither waited:\n{}\n{}",
        one.stdout,
        two.stdout
    );
    let history = releases(&p, "develop");
    let (x, y) = (&history[history.len() - 2], &history[history.len() - 1]);
    assert!(
        x["finished_at"].as_str().unwrap() <= y["started_at"].as_str().unwrap(),
        "{x}\n{y}"
    );

    // The namespace's ApplySet taken over by another tool: refused under
    // the lock before any record or object is written.
    assert!(
        kube.kubectl(&[
            "-n",
            ns,
            "annotate",
            "--overwrite",
            "configmap",
            "slipway-applyset",
            "applyset.kubernetes.io/tooling=kubectl/v1.31",
        ])
        .status
        .success()
    );
    deploy(&p, &["--branch", "develop", "--image-digest", &first])
        .code(1)
        .stderr_has("managed by `kubectl/v1.31`, not slipway");
    assert_eq!(releases(&p, "develop").len(), history.len());
}

#[test]
fn rollout_waits_watch_the_deployment_and_its_pods_and_poll_when_watches_fail() {
    let (aws, kube, p) = platform(None);
    let ns = "smallcase-develop";
    for (tag, seed) in [
        ("develop-aaaaaaa", "a"),
        ("develop-bbbbbbb", "b"),
        ("develop-ccccccc", "c"),
        ("develop-ddddddd", "d"),
    ] {
        put_image(&aws, tag, seed);
    }
    let land = |tag: &str| {
        deploy(
            &p,
            &[
                "--branch",
                "develop",
                "--image-tag",
                tag,
                "--commit",
                "abcdef12345",
            ],
        )
        .success()
        .stdout_has("Deployed release");
    };

    // The wait watches the Deployment (by name) and its pods (by the
    // Deployment's selector), opened before its first look after the
    // write, so no change between a look and the wait is missed.
    land("develop-aaaaaaa");
    kube.reset_requests();
    land("develop-bbbbbbb");
    let log = kube.request_log();
    let at = |e: &Value| e["arrived"].as_f64().unwrap();
    let deployment = format!("/apis/apps/v1/namespaces/{ns}/deployments/app");
    let patched = log["log"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["method"] == "PATCH" && e["path"] == deployment.as_str())
        .map(at)
        .expect("the Deployment was applied");
    let first_look = log["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["method"] == "GET" && e["path"] == deployment.as_str() && at(e) > patched)
        .map(at)
        .next()
        .expect("the rollout was looked at");
    let watches = log["watches"].as_array().unwrap();
    let watched = |path: &str, selector: &str| {
        watches
            .iter()
            .filter(|w| w["path"] == path && !w[selector].as_str().unwrap_or("").is_empty())
            .map(at)
            .collect::<Vec<f64>>()
    };
    let on_deployment = watched(
        &format!("/apis/apps/v1/namespaces/{ns}/deployments"),
        "fieldSelector",
    );
    let on_pods = watched(&format!("/api/v1/namespaces/{ns}/pods"), "labelSelector");
    assert!(
        on_deployment.iter().any(|&t| t > patched && t < first_look)
            && on_pods.iter().any(|&t| t > patched && t < first_look),
        "the Deployment and its pods are watched before the first look: {watches:?}"
    );
    assert!(
        watches
            .iter()
            .any(|w| w["fieldSelector"] == "metadata.name=app"),
        "{watches:?}"
    );

    // Watches refused: the wait polls instead, and the release lands.
    kubetest_config(&kube, json!({"watch_faults": ["refuse"]}));
    land("develop-ccccccc");
    assert!(image_of(&kube, ns).unwrap().contains('@'));
    assert_eq!(
        releases(&p, "develop").last().unwrap()["tag"],
        "develop-ccccccc"
    );

    // Watches the server ends at once: opened again, and the release lands.
    kubetest_config(&kube, json!({"watch_faults": ["close"]}));
    kube.reset_requests();
    land("develop-ddddddd");
    let log = kube.request_log();
    let reopened = log["watches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["fieldSelector"] == "metadata.name=app")
        .count();
    assert!(
        reopened >= 2,
        "the ended watch was opened again: {}",
        log["watches"]
    );
    assert_eq!(
        releases(&p, "develop").last().unwrap()["tag"],
        "develop-ddddddd"
    );
    kubetest_config(&kube, json!({"watch_faults": []}));

    // STS refuses the credentials: the identity check goes beside the
    // first reads, and its refusal is the one error, before the lock is
    // taken or anything is written; `releases` says the same.
    aws.configure(json!({"faults": {"rate": 1.0, "kinds": ["denied"],
        "operations": ["GetCallerIdentity"]}}));
    kube.reset_requests();
    let refused = deploy(
        &p,
        &[
            "--branch",
            "develop",
            "--image-tag",
            "develop-aaaaaaa",
            "--commit",
            "abcdef12345",
        ],
    );
    refused
        .code(1)
        .stderr_has("AWS rejected the credentials")
        .stderr_has("hint: check that the credentials are current");
    assert_eq!(
        refused.stderr.matches("error:").count(),
        1,
        "{}",
        refused.stderr
    );
    let writes: Vec<Value> = kube.request_log()["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["method"] != "GET")
        .cloned()
        .collect();
    assert!(writes.is_empty(), "nothing written: {writes:?}");
    p.run(&["releases", "--env", "develop"])
        .code(1)
        .stderr_has("AWS rejected the credentials");
    aws.configure(json!({"faults": {"rate": 0.0}}));
    assert_eq!(
        releases(&p, "develop").last().unwrap()["tag"],
        "develop-ddddddd"
    );
}

#[test]
fn the_example_jenkinsfile_is_what_slipway_generates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["--stack", "stacks/smallcase.toml", "jenkinsfile"])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).unwrap();
    let committed = std::fs::read_to_string(root.join("examples/flask-app/Jenkinsfile")).unwrap();
    assert_eq!(
        committed, generated,
        "examples/flask-app/Jenkinsfile is stale: run `slipway --stack stacks/smallcase.toml jenkinsfile > examples/flask-app/Jenkinsfile`"
    );
    for needle in [
        // The protected branch builds where only it may deploy.
        "agent { label \"${env.BRANCH_NAME == 'master' ? 'slipway-production' : 'slipway-build'}\" }",
        "aws ecr get-login-password",
        "deploy --branch \"$BRANCH_NAME\" --image-tag \"$IMAGE_TAG\"",
        "--image-tag \"develop-$MERGED_SHORT_SHA\"",
        "promote --from green --to blue --yes",
        "when { branch 'master' }",
        "post {",
    ] {
        assert!(generated.contains(needle), "{needle} missing:\n{generated}");
    }
}

fn load_balancers_of(aws: &LocalAws, stack: &str) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let elb = aws.elbv2().await;
        let arns: Vec<String> = elb
            .describe_load_balancers()
            .send()
            .await
            .unwrap()
            .load_balancers()
            .iter()
            .filter_map(|l| l.load_balancer_arn().map(str::to_string))
            .collect();
        if arns.is_empty() {
            return arns;
        }
        elb.describe_tags()
            .set_resource_arns(Some(arns))
            .send()
            .await
            .unwrap()
            .tag_descriptions()
            .iter()
            .filter(|d| {
                d.tags()
                    .iter()
                    .any(|t| t.key() == Some("ingress.k8s.aws/stack") && t.value() == Some(stack))
            })
            .filter_map(|d| d.resource_arn().map(str::to_string))
            .collect()
    })
}

/// The example app's image pushed and deployed to `develop`: its Ingress
/// becomes an ALB.
fn deploy_develop(aws: &LocalAws, p: &Project) {
    put_image(aws, "develop-aaaaaaa", "a");
    redeploy_develop(p);
}

/// The image `deploy_develop` pushed, deployed to `develop` (again).
fn redeploy_develop(p: &Project) {
    deploy(
        p,
        &[
            "--branch",
            "develop",
            "--image-tag",
            "develop-aaaaaaa",
            "--commit",
            "aaaaaaa1234",
        ],
    )
    .success();
}

/// The load balancer controller scaled to zero: nothing removes what it made.
fn stop_the_controller(kube: &KubeTest) {
    let out = kube.kubectl(&[
        "-n",
        "kube-system",
        "scale",
        "deployment",
        "aws-load-balancer-controller",
        "--replicas=0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn destroying_an_environment_removes_its_load_balancers_even_when_the_controller_does_not() {
    let (aws, kube, p) = platform(None);
    deploy_develop(&aws, &p);
    let stack = "smallcase-develop/app";
    assert_eq!(
        load_balancers_of(&aws, stack).len(),
        1,
        "the controller made the ALB"
    );

    // With the controller running: it removes the ALB, and slipway checks.
    p.run(&["destroy", "--env", "develop", "--auto-approve"])
        .success()
        .stdout_has("waiting until AWS no longer lists their load balancers");
    assert!(load_balancers_of(&aws, stack).is_empty());
    assert!(kube.get(&["namespace", "smallcase-develop"]).is_none());

    // Again, but the controller stopped (scaled to zero): nothing would
    // remove the ALB or the Ingress's finalizer, and the namespace would
    // never go. slipway does the controller's work after the timeout.
    p.run(&["apply", "--auto-approve"]).success();
    redeploy_develop(&p);
    assert_eq!(load_balancers_of(&aws, stack).len(), 1);
    stop_the_controller(&kube);
    let run = p.run(&[
        "destroy",
        "--env",
        "develop",
        "--auto-approve",
        "--controller-timeout",
        "5s",
    ]);
    run.success()
        .stderr_has("slipway removed 1 load balancer(s)")
        .stderr_has("removed the controller's finalizer from Ingress `smallcase-develop/app`");
    assert!(load_balancers_of(&aws, stack).is_empty());
    assert!(kube.get(&["namespace", "smallcase-develop"]).is_none());
}

#[test]
fn drift_reports_load_balancers_whose_ingress_is_gone_and_never_the_applications_objects() {
    let (aws, kube, p) = platform(None);
    deploy_develop(&aws, &p);
    let stack = "smallcase-develop/app";
    assert_eq!(load_balancers_of(&aws, stack).len(), 1);
    // The deployed application and the ALB the controller made for its
    // Ingress are not drift of the platform.
    aws.reset_calls();
    kube.reset_requests();
    p.run(&["drift"]).code(0).stdout_has("No drift");
    assert_eq!(aws.calls()["mutating"], 0, "{}", aws.calls());
    let requests = kube.requests();
    assert_eq!(
        requests["mutating"], 0,
        "drift wrote to the cluster: {requests}"
    );
    assert!(requests["total"].as_u64().unwrap() > 0, "{requests}");

    // The controller stops, and someone forces the Ingress away: its ALB
    // and target group stay behind, fronting nothing.
    stop_the_controller(&kube);
    for args in [
        &[
            "-n",
            "smallcase-develop",
            "patch",
            "ingress",
            "app",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ][..],
        &[
            "-n",
            "smallcase-develop",
            "delete",
            "ingress",
            "app",
            "--wait=false",
        ][..],
    ] {
        let out = kube.kubectl(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    kube.reset_requests();
    let run = p.run(&["drift", "--json"]);
    run.code(2);
    assert_eq!(kube.requests()["mutating"], 0);
    let doc = run.json();
    let orphans: Vec<&Value> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "orphaned")
        .collect();
    let kinds: Vec<&str> = orphans
        .iter()
        .map(|f| f["address"].as_str().unwrap().split('.').nth(1).unwrap())
        .collect();
    assert!(
        kinds.contains(&"load_balancer") && kinds.contains(&"target_group"),
        "{doc:#}"
    );
    assert!(
        orphans.iter().all(|f| f["detail"]
            .as_str()
            .unwrap()
            .contains("Ingress `smallcase-develop/app`")),
        "{doc:#}"
    );
    assert_eq!(doc["counts"]["by_kind"]["orphaned"], orphans.len());
    p.run(&["drift"])
        .code(2)
        .stdout_has("was made by the load balancer controller for Ingress `smallcase-develop/app`, which no longer exists");
}

#[test]
fn a_namespace_held_by_a_finalizer_is_named_with_what_to_do_and_a_rerun_finishes() {
    let (_aws, kube, p) = platform(None);
    kube_apply(
        &kube,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "held", "namespace": "smallcase-develop",
                            "finalizers": ["example.com/hold"]}}),
    );
    let run = p.run(&[
        "destroy",
        "--env",
        "develop",
        "--auto-approve",
        "--namespace-timeout",
        "4s",
    ]);
    run.code(1)
        .stdout_has("`smallcase-develop` is still terminating after")
        .stdout_has("ConfigMap `smallcase-develop/held` waits on finalizer `example.com/hold`")
        .stdout_has("remove the finalizer by hand");
    // The profile its pods run on stays until the namespace is gone.
    assert!(
        !run.stdout
            .contains("aws.eks_fargate_profile.develop: destroyed"),
        "{}",
        run.stdout
    );
    assert!(kube.get(&["namespace", "smallcase-blue"]).is_some());
    // Again while it is still terminating: the same wait and the same
    // answer, not the API server's conflict.
    p.run(&[
        "destroy",
        "--env",
        "develop",
        "--auto-approve",
        "--namespace-timeout",
        "2s",
    ])
    .code(1)
    .stdout_has("ConfigMap `smallcase-develop/held` waits on finalizer `example.com/hold`");

    // Its controller done (here: by hand), the same command finishes.
    let out = kube.kubectl(&[
        "-n",
        "smallcase-develop",
        "patch",
        "configmap",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.run(&["destroy", "--env", "develop", "--auto-approve"])
        .success();
    assert!(kube.get(&["namespace", "smallcase-develop"]).is_none());
    p.run(&["plan"])
        .success()
        .stdout_has("+ k8s.namespace.smallcase-develop");
}

#[test]
fn a_teardown_waiting_on_the_controller_can_be_interrupted_and_a_rerun_finishes() {
    let (aws, kube, p) = platform(None);
    deploy_develop(&aws, &p);
    stop_the_controller(&kube);
    // Nothing removes the ALB: slipway would wait ten minutes for it.
    let args = [
        "destroy",
        "--env",
        "develop",
        "--auto-approve",
        "--controller-timeout",
        "10m",
    ];
    let child = common::spawn(&p, &args);
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(p.path("run.out"))
        .unwrap_or_default()
        .contains("waiting until AWS no longer lists")
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the teardown started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    common::send_signal(child.id(), "INT");
    let run = common::finished(&p, &args, child);
    run.code(130).stderr_has("run the destroy again to finish");
    assert!(
        !p.path("state/smallcase.json.lock").exists(),
        "the lock is released"
    );
    assert!(kube.get(&["namespace", "smallcase-develop"]).is_some());

    p.run(&[
        "destroy",
        "--env",
        "develop",
        "--auto-approve",
        "--controller-timeout",
        "2s",
    ])
    .success();
    assert!(load_balancers_of(&aws, "smallcase-develop/app").is_empty());
    assert!(kube.get(&["namespace", "smallcase-develop"]).is_none());
}

/// The reliability suite's deploy crashes (docs/reliability.md): a deploy
/// SIGKILLed at a seeded random moment leaves its lease and maybe a
/// release recorded as running; the next deploy waits the lease out, closes
/// that record as failed, and lands. No record stays `running`.
#[test]
fn deploys_killed_at_seeded_random_moments_are_closed_and_the_next_one_lands() {
    let (aws, kube, p) = platform(None);
    let ns = "smallcase-develop";
    let base = put_image(&aws, "develop-base", "crash-base");
    let started = std::time::Instant::now();
    deploy(&p, &["--branch", "develop", "--image-digest", &base]).success();
    let whole = started.elapsed().as_millis() as u64;
    // One kill is not left to chance: right after the release is recorded.
    let seeds = std::iter::once(0).chain(common::seeds());
    for seed in seeds {
        let mut rng = common::Rng(seed);
        let killed = put_image(
            &aws,
            &format!("develop-killed-{seed}"),
            &format!("crash-{seed}"),
        );
        let next = put_image(
            &aws,
            &format!("develop-next-{seed}"),
            &format!("after-{seed}"),
        );
        let at = rng.between(50, whole);
        let mut child = p
            .command(&["deploy", "--branch", "develop", "--image-digest", &killed])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        if seed == 0 {
            use std::io::BufRead;
            let recorded = std::io::BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.contains("of `develop` started"));
            assert!(recorded, "the deploy never recorded its release");
        } else {
            std::thread::sleep(std::time::Duration::from_millis(at));
        }
        let _ = child.kill();
        child.wait().unwrap();

        let run = deploy(
            &p,
            &[
                "--branch",
                "develop",
                "--image-digest",
                &next,
                "--lock-timeout",
                "120s",
            ],
        );
        assert_eq!(
            run.code, 0,
            "seed {seed}: the deploy after SIGKILL at {at} ms of ~{whole} ms failed:\n{}\n{}",
            run.stdout, run.stderr
        );
        assert_eq!(
            image_of(&kube, ns).as_deref(),
            Some(format!("123456789012.dkr.ecr.ap-south-1.amazonaws.com/{REPO}@{next}").as_str()),
            "seed {seed}"
        );
        let history = releases(&p, "develop");
        let running: Vec<_> = history
            .iter()
            .filter(|r| r["result"] == "running")
            .collect();
        assert!(running.is_empty(), "seed {seed}: left running: {running:?}");
        let last = history.last().unwrap();
        assert_eq!(last["result"], "succeeded", "seed {seed}: {last}");
        assert_eq!(last["digest"], next.as_str(), "seed {seed}: {last}");
        // Killed before its record: none; after it finished: succeeded;
        // in between: closed by the next deploy.
        let of_killed: Vec<_> = history
            .iter()
            .filter(|r| r["digest"] == killed.as_str())
            .collect();
        if seed == 0 {
            assert!(
                of_killed.len() == 1 && of_killed[0]["result"] == "failed",
                "{of_killed:?}"
            );
            run.stdout_has("was left running by a deploy that stopped");
        }
        for r in of_killed {
            let closed = r["result"] == "failed"
                && r["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("stopped before it finished");
            assert!(r["result"] == "succeeded" || closed, "seed {seed}: {r}");
        }
    }
}
