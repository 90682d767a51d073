//! The whole platform in one run — AWS (network, IAM, ECR, Jenkins, EKS on
//! Fargate) against the local AWS and the in-cluster platform (namespaces,
//! CoreDNS on Fargate, deployer RBAC, the load balancer controller) against
//! the Kubernetes test server — with no simulated cloud.

mod common;

use common::Project;
use common::kubetest::KubeTest;
use common::localaws::LocalAws;
use serde_json::json;

#[test]
fn one_apply_goes_from_empty_to_a_working_platform_and_keeps_it_there() {
    let aws = LocalAws::start(&["--time-scale", "0.002"]);
    let kube = KubeTest::start(&aws.endpoint);
    kube.seed_eks_defaults();
    let p = Project::platform_on(&aws, &kube);

    let apply = p.run(&["apply", "--auto-approve"]);
    apply.success().stdout_has("Apply complete!");
    // Four Fargate profiles, one at a time, and EKS's ResourceInUseException never reaches the user.
    assert!(
        !apply.stdout.contains("ResourceInUseException"),
        "{}",
        apply.stdout
    );
    let profiles = aws.calls_of("CreateFargateProfile");
    assert!(profiles >= 4, "{}", aws.calls());
    // A no-change plan reads the cluster's objects at once: with every
    // request taking 200 ms, no more than a few round trips one after
    // another (connect, discovery, reads; discovery's lists of each kind
    // all at once), and no discovery document asked for twice.
    kube.configure(serde_json::json!({"latency_ms": 200}));
    kube.reset_requests();
    p.run(&["plan", "--detailed-exitcode"])
        .code(0)
        .stdout_has("No changes.");
    let chain = kube.longest_request_chain();
    let requests = kube.requests();
    kube.configure(serde_json::json!({"latency_ms": 0}));
    assert!(
        chain <= 6,
        "{chain} Kubernetes requests one after another: {requests}"
    );
    assert!(
        requests["total"].as_u64().unwrap() <= 50,
        "a no-change plan's Kubernetes requests: {requests}"
    );

    // What the platform consists of inside the cluster.
    // Production deploys only as the production agent; each Jenkins pool
    // reads the other's environments.
    for (ns, deployers, readers) in [
        (
            "smallcase-blue",
            "slipway-production-deployers",
            "slipway-deployers",
        ),
        (
            "smallcase-green",
            "slipway-deployers",
            "slipway-production-deployers",
        ),
        (
            "smallcase-develop",
            "slipway-deployers",
            "slipway-production-deployers",
        ),
    ] {
        let n = kube
            .get(&["namespace", ns])
            .unwrap_or_else(|| panic!("namespace {ns}"));
        assert_eq!(n["metadata"]["labels"]["slipway.dev/stack"], "smallcase");
        assert!(kube.get(&["-n", ns, "role", "slipway-deployer"]).is_some());
        let binding = kube
            .get(&["-n", ns, "rolebinding", "slipway-deployer"])
            .unwrap();
        assert_eq!(binding["subjects"][0]["name"], deployers, "{ns}");
        let binding = kube
            .get(&["-n", ns, "rolebinding", "slipway-reader"])
            .unwrap();
        assert_eq!(binding["subjects"][0]["name"], readers, "{ns}");
        assert_eq!(binding["roleRef"]["name"], "view", "{ns}");
    }
    let sa = kube
        .get(&[
            "-n",
            "kube-system",
            "serviceaccount",
            "aws-load-balancer-controller",
        ])
        .unwrap();
    let role_arn =
        p.state()["resources"]["aws.iam_role.lb_controller"]["attributes"]["arn"].clone();
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        role_arn
    );
    let controller = kube
        .get(&[
            "-n",
            "kube-system",
            "deployment",
            "aws-load-balancer-controller",
        ])
        .unwrap();
    let args = controller["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    let vpc = p.state()["resources"]["aws.vpc.main"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        args.contains("--cluster-name=smallcase")
            && args.contains("--aws-region=ap-south-1")
            && args.contains(&format!("--aws-vpc-id={vpc}")),
        "{args}"
    );
    assert!(kube.get(&["ingressclass", "alb"]).is_some());
    // The controller's IAM policy is upstream's for the pinned version.
    let policy = &p.state()["resources"]["aws.iam_policy.lb_controller"]["attributes"]["policy"];
    assert_eq!(policy["Statement"].as_array().map(Vec::len), Some(16));
    assert!(
        policy
            .to_string()
            .contains("elasticloadbalancing:CreateLoadBalancer")
    );
    assert!(
        kube.get(&["crd", "targetgroupbindings.elbv2.k8s.aws"])
            .is_some()
    );
    // The cluster's OIDC provider trusts the issuer's top intermediate CA,
    // as the issuer presented it over TLS.
    let oidc = &p.state()["resources"]["aws.iam_openid_connect_provider.eks"]["attributes"];
    assert_eq!(oidc["thumbprint_list"], json!([aws.oidc()["thumbprint"]]));
    assert!(
        oidc["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://localhost:")),
        "{oidc}"
    );
    // The webhooks were registered once their service had a ready endpoint.
    let slices = kube
        .get(&[
            "-n",
            "kube-system",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=aws-load-balancer-webhook-service",
        ])
        .unwrap();
    assert_eq!(
        slices["items"][0]["endpoints"][0]["conditions"]["ready"], true,
        "{slices}"
    );
    let coredns = kube
        .get(&["-n", "kube-system", "deployment", "coredns"])
        .unwrap();
    assert_eq!(
        coredns["spec"]["template"]["metadata"]["annotations"]["eks.amazonaws.com/compute-type"],
        "fargate"
    );
    assert_eq!(
        coredns["spec"]["replicas"], 2,
        "fields slipway does not manage stay as EKS set them"
    );

    // A managed field changed by someone else shows in the plan and is put
    // back; a field slipway does not manage is left alone.
    let out = kube.kubectl(&[
        "label",
        "namespace",
        "smallcase-blue",
        "slipway.dev/environment=hacked",
        "team=payments",
        "--overwrite",
    ]);
    assert!(out.status.success());
    p.run(&["plan", "--detailed-exitcode"])
        .code(2)
        .stdout_has("~ k8s.namespace.smallcase-blue")
        .stdout_has("\"hacked\"");
    p.run(&["apply", "--auto-approve"]).success();
    let labels = kube.get(&["namespace", "smallcase-blue"]).unwrap()["metadata"]["labels"].clone();
    assert_eq!(labels["slipway.dev/environment"], "blue");
    assert_eq!(labels["team"], "payments");
    p.run(&["plan", "--detailed-exitcode"]).code(0);

    // Someone grants a user the deployer role: the plan shows it, apply
    // takes it back (`subjects` is slipway's, whole).
    let out = kube.kubectl(&[
        "-n",
        "smallcase-green",
        "patch",
        "rolebinding",
        "slipway-deployer",
        "--type=json",
        "-p",
        r#"[{"op": "add", "path": "/subjects/-", "value": {"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}}]"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drift = p.run(&["drift", "--json"]);
    drift.code(2);
    let doc = drift.json();
    let extra = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "extra")
        .unwrap_or_else(|| panic!("a subject added is an extra member: {doc:#}"));
    assert_eq!(
        extra["address"],
        "k8s.role_binding.smallcase-green/slipway-deployer"
    );
    assert_eq!(extra["path"], "manifest.subjects");
    assert_eq!(extra["live"]["name"], "mallory");
    p.run(&["plan", "--detailed-exitcode"])
        .code(2)
        .stdout_has("~ k8s.role_binding.smallcase-green/slipway-deployer")
        .stdout_has("mallory");
    p.run(&["apply", "--auto-approve"]).success();
    let binding = kube
        .get(&["-n", "smallcase-green", "rolebinding", "slipway-deployer"])
        .unwrap();
    assert_eq!(
        binding["subjects"].as_array().map(Vec::len),
        Some(1),
        "{binding}"
    );
    p.run(&["plan", "--detailed-exitcode"]).code(0);

    // An object labelled as the stack's that the state does not know is reported.
    let stray = p.path("stray.yaml");
    std::fs::write(&stray, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: stray\n  labels:\n    slipway.dev/stack: smallcase\n").unwrap();
    assert!(
        kube.kubectl(&["apply", "-f", stray.to_str().unwrap()])
            .status
            .success()
    );
    p.run(&["drift"])
        .code(2)
        .stdout_has("k8s.namespace.stray exists");
    assert!(
        kube.kubectl(&["delete", "namespace", "stray"])
            .status
            .success()
    );

    // One environment goes, shared infrastructure stays.
    p.run(&["destroy", "--env", "green", "--auto-approve"])
        .success();
    assert!(kube.get(&["namespace", "smallcase-green"]).is_none());
    assert!(kube.get(&["namespace", "smallcase-blue"]).is_some());
    // An application's Ingress: the controller makes it an ALB and puts its
    // finalizer on it. A full destroy deletes the namespace while the
    // controller still runs, so the ALB goes and nothing is left stuck.
    let ingress = p.path("ingress.yaml");
    std::fs::write(
        &ingress,
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\n  namespace: smallcase-blue\nspec:\n  ingressClassName: alb\n  defaultBackend:\n    service:\n      name: web\n      port:\n        number: 80\n",
    )
    .unwrap();
    assert!(
        kube.kubectl(&["apply", "-f", ingress.to_str().unwrap()])
            .status
            .success()
    );
    let started = std::time::Instant::now();
    while kube
        .get(&["-n", "smallcase-blue", "ingress", "web"])
        .is_none_or(|i| i["status"]["loadBalancer"]["ingress"][0]["hostname"].is_null())
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the ingress never got a load balancer"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    aws.reset_calls();
    p.run(&["destroy", "--auto-approve", "--allow-protected"])
        .success();
    assert!(kube.get(&["namespace", "smallcase-blue"]).is_none());
    assert_eq!(p.state_count(), 0);
    let deleted = aws.calls_of("DeleteLoadBalancer");
    assert_eq!(deleted, 1, "the ALB is deleted: {}", aws.calls());
}

#[test]
fn an_unreachable_cluster_is_one_clear_error_naming_the_endpoint() {
    let aws = LocalAws::start(&["--time-scale", "0.002"]);
    let kube = KubeTest::start(&aws.endpoint);
    kube.seed_eks_defaults();
    let p = Project::platform_on(&aws, &kube);
    p.run(&["apply", "--auto-approve"]).success();
    // The cluster's API goes away; its kubeconfig stays.
    let kubeconfig = std::fs::read_to_string(&kube.kubeconfig).unwrap();
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_string();
    let kept = p.path("kubeconfig");
    std::fs::write(&kept, &kubeconfig).unwrap();
    drop(kube);
    let mut p = p;
    p.env.retain(|(k, _)| *k != "SLIPWAY_KUBECONFIG");
    p.env
        .push(("SLIPWAY_KUBECONFIG", kept.display().to_string()));
    let run = p.run(&["plan"]);
    run.code(1)
        .stderr_has("cannot reach the Kubernetes API at")
        .stderr_has(&server);
    assert_eq!(
        run.stderr.matches("KubernetesUnreachable").count(),
        1,
        "one line, not one per object:\n{}",
        run.stderr
    );
}

/// The local AWS and a Kubernetes test server that authenticates EKS tokens
/// (verified with the local AWS's STS, signatures checked for the test key).
fn eks_pair(cluster_name: &str) -> (LocalAws, KubeTest) {
    let aws = LocalAws::start(&["--time-scale", "0.002"]);
    let kube = KubeTest::for_eks_cluster(&aws.endpoint, cluster_name);
    (aws, kube)
}

#[test]
fn by_default_slipway_connects_through_the_eks_cluster_with_its_own_token() {
    let (aws, kube) = eks_pair("smallcase");
    let p = Project::platform_through_eks(&aws, &kube);
    p.run(&["apply", "--auto-approve"])
        .success()
        .stdout_has("Apply complete!");
    let auth = kube.auth();
    assert!(auth["eks_tokens"].as_u64() >= Some(1), "{auth}");
    assert_eq!(auth["rejected"], 0, "{auth}");
    assert!(
        auth["identities"]
            .as_array()
            .is_some_and(|ids| !ids.is_empty()),
        "{auth}"
    );
    assert!(
        kube.get(&["namespace", "smallcase-blue"]).is_some(),
        "the objects went to the cluster DescribeCluster named"
    );
    p.run(&["plan", "--detailed-exitcode"]).code(0);

    // The connection to the endpoint the state recorded starts beside
    // DescribeCluster: with 300 ms on every AWS call, the API server is
    // asked before DescribeCluster has answered.
    aws.configure(json!({"latency_ms": 300}));
    kube.reset_requests();
    let before = aws.timed_call_log().len();
    p.run(&["plan", "--detailed-exitcode"]).code(0);
    aws.configure(json!({"latency_ms": 0}));
    let described = aws.timed_call_log()[before..]
        .iter()
        .find(|c| c["operation"] == "DescribeCluster")
        .map(|c| c["answered"].as_f64().unwrap())
        .expect("DescribeCluster was called");
    let log = kube.request_log();
    let version = log["log"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == "/version")
        .map(|r| r["arrived"].as_f64().unwrap())
        .expect("the API server's version was asked");
    assert!(
        version < described,
        "/version at {version}, DescribeCluster answered at {described}"
    );

    // The state's endpoint is stale (the cluster moved): the connection
    // goes where DescribeCluster says, and the plan is as it was.
    let mut state = p.state();
    state["resources"]["aws.eks_cluster.main"]["attributes"]["endpoint"] =
        json!("https://127.0.0.1:9");
    std::fs::write(
        p.state_path(),
        serde_json::to_string_pretty(&state).unwrap(),
    )
    .unwrap();
    p.run(&["plan", "--detailed-exitcode"]).code(0);

    // The cluster is deleted behind slipway's back: everything in it went
    // with it. The plan says so instead of failing to connect.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // As someone would with the console: one profile at a time (EKS
        // refuses another change while one is in progress), then the cluster.
        let eks = aws.eks().await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let profiles = eks
                .list_fargate_profiles()
                .cluster_name("smallcase")
                .send()
                .await
                .unwrap();
            let Some(name) = profiles.fargate_profile_names().first() else {
                break;
            };
            let _ = eks
                .delete_fargate_profile()
                .cluster_name("smallcase")
                .fargate_profile_name(name)
                .send()
                .await;
            assert!(std::time::Instant::now() < deadline, "profiles never went");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        eks.delete_cluster().name("smallcase").send().await.unwrap();
    });
    let started = std::time::Instant::now();
    loop {
        let run = p.run(&["plan", "--detailed-exitcode"]);
        if run.stdout.contains("+ aws.eks_cluster.main") {
            run.code(2).stdout_has("+ k8s.namespace.smallcase-blue");
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the cluster never went: {}",
            run.stdout
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    // Apply brings it all back (waiting for the old cluster to finish
    // deleting if it still is), into the new cluster.
    p.run(&["apply", "--auto-approve"]).success();
    p.run(&["plan", "--detailed-exitcode"]).code(0);
    assert!(kube.get(&["namespace", "smallcase-blue"]).is_some());
    p.run(&["destroy", "--auto-approve", "--allow-protected"])
        .success();
    assert_eq!(p.state_count(), 0);
}

#[test]
fn a_refused_token_is_one_clear_error_naming_the_aws_identity() {
    // The server expects tokens for another cluster name.
    let (aws, kube) = eks_pair("elsewhere");
    let p = Project::platform_through_eks(&aws, &kube);
    let run = p.run(&["apply", "--auto-approve"]);
    run.code(1)
        .stdout_has("KubernetesUnauthorized")
        .stdout_has("AWS identity `arn:aws:")
        .stdout_has("has no access to EKS cluster `smallcase`")
        .stdout_has("associate-access-policy");
    // Asked again for a few seconds (a new access entry takes a moment),
    // then given up for the whole run: not once per object.
    let rejected = kube.auth()["rejected"].as_u64().unwrap_or(0);
    assert!((2..=6).contains(&rejected), "{}", kube.auth());
}
