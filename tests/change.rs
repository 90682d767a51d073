//! Safe change against the local AWS and the Kubernetes test server: a
//! replacement carries what lives inside the replaced object, deletes follow
//! the dependencies recorded when things were made, protected environments
//! hold for every plan.

mod common;

use common::Project;
use common::kubetest::KubeTest;
use common::localaws::LocalAws;

const CLUSTER_TAG: &str = "elbv2.k8s.aws/cluster";

/// A load balancer and target group tagged as the controller tags them, as
/// if an Ingress had made them and the controller had not cleaned up.
fn controller_leftovers(aws: &LocalAws, subnets: Vec<String>) -> (String, String, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use aws_sdk_elasticloadbalancingv2::types::Tag;
        let elb = aws.elbv2().await;
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let lb = elb
            .create_load_balancer()
            .name("k8s-smallcas-app-0123456789")
            .set_subnets(Some(subnets))
            .tags(tag(CLUSTER_TAG, "smallcase"))
            .tags(tag("ingress.k8s.aws/stack", "smallcase-develop/app"))
            .send()
            .await
            .unwrap();
        let lb_arn = lb.load_balancers()[0]
            .load_balancer_arn()
            .unwrap()
            .to_string();
        let vpc = lb.load_balancers()[0].vpc_id().unwrap().to_string();
        let tg = elb
            .create_target_group()
            .name("k8s-smallcas-app-abcdef0123")
            .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
            .port(80)
            .vpc_id(&vpc)
            .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Ip)
            .tags(tag(CLUSTER_TAG, "smallcase"))
            .send()
            .await
            .unwrap();
        let tg_arn = tg.target_groups()[0]
            .target_group_arn()
            .unwrap()
            .to_string();
        let ec2 = aws.ec2().await;
        let sg = ec2
            .create_security_group()
            .group_name("k8s-traffic-smallcase-0123456789")
            .description("[k8s] Shared Backend SecurityGroup for LoadBalancer")
            .vpc_id(vpc)
            .tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::SecurityGroup)
                    .tags(
                        aws_sdk_ec2::types::Tag::builder()
                            .key(CLUSTER_TAG)
                            .value("smallcase")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
        (lb_arn, tg_arn, sg.group_id().unwrap().to_string())
    })
}

fn load_balancers(aws: &LocalAws) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let elb = aws.elbv2().await;
        let lbs = elb.describe_load_balancers().send().await.unwrap();
        let tgs = elb.describe_target_groups().send().await.unwrap();
        lbs.load_balancers()
            .iter()
            .filter_map(|l| l.load_balancer_arn())
            .chain(
                tgs.target_groups()
                    .iter()
                    .filter_map(|t| t.target_group_arn()),
            )
            .map(str::to_string)
            .collect()
    })
}

fn uid(kube: &KubeTest, args: &[&str]) -> String {
    kube.get(args).unwrap_or_else(|| panic!("{args:?} exists"))["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn replacing_the_cluster_while_dropping_an_az_carries_its_contents_in_one_apply() {
    let aws = LocalAws::start(&["--time-scale", "0.002"]);
    let kube = KubeTest::start(&aws.endpoint);
    kube.seed_eks_defaults();
    let p = Project::platform_on(&aws, &kube);
    p.edit_stack("azs  = 2 ", "azs  = 3 ");
    p.run(&["apply", "--auto-approve"]).success();
    let state = p.state();
    let subnet = |name: &str| {
        state["resources"][format!("aws.subnet.{name}")]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let leftovers = controller_leftovers(&aws, vec![subnet("public_a"), subnet("public_c")]);
    let blue = uid(&kube, &["namespace", "smallcase-blue"]);
    let controller = uid(
        &kube,
        &[
            "-n",
            "kube-system",
            "deployment",
            "aws-load-balancer-controller",
        ],
    );

    // Two AZs: the cluster's subnets change, which replaces it.
    p.edit_stack("azs  = 3 ", "azs  = 2 ");
    let plan = p.run(&["plan", "--detailed-exitcode"]);
    plan.code(2)
        .stdout_has("-/+ aws.eks_cluster.main")
        .stdout_has("-/+ k8s.namespace.smallcase-blue")
        .stdout_has("-/+ aws.eks_fargate_profile.blue")
        .stdout_has("-/+ aws.eks_access_entry.jenkins_agent")
        .stdout_has("# replaced with aws.eks_cluster.main")
        .stdout_has("- aws.subnet.private_c");

    // The protected environment's namespace and profile are replaced: that
    // needs saying so.
    p.run(&["apply", "--auto-approve"])
        .code(1)
        .stderr_has("protected")
        .stderr_has("--allow-protected");

    let run = p.run(&["apply", "--auto-approve", "--allow-protected"]);
    run.success().stdout_has("Apply complete!");
    assert!(
        !run.stdout.contains("DependencyViolation") && !run.stderr.contains("DependencyViolation"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    p.run(&["plan", "--detailed-exitcode"]).code(0);

    // The in-cluster objects were made anew, in the new cluster.
    assert_ne!(uid(&kube, &["namespace", "smallcase-blue"]), blue);
    assert_ne!(
        uid(
            &kube,
            &[
                "-n",
                "kube-system",
                "deployment",
                "aws-load-balancer-controller"
            ]
        ),
        controller
    );
    // What the old cluster's controller made went before the cluster did.
    let remaining = load_balancers(&aws);
    assert!(
        !remaining.contains(&leftovers.0) && !remaining.contains(&leftovers.1),
        "{remaining:?}"
    );
    assert!(aws.calls_of("DeleteLoadBalancer") >= 1);
    let sg_left = tokio::runtime::Runtime::new().unwrap().block_on(async {
        aws.ec2()
            .await
            .describe_security_groups()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("group-id")
                    .values(&leftovers.2)
                    .build(),
            )
            .send()
            .await
            .map(|o| o.security_groups().len())
            .unwrap_or(0)
    });
    assert_eq!(
        sg_left, 0,
        "the controller's security group went after the cluster"
    );
    assert!(p.state()["resources"].get("aws.subnet.private_c").is_none());
}

fn managers(kube: &KubeTest, args: &[&str]) -> Vec<String> {
    let mut all = args.to_vec();
    all.push("--show-managed-fields");
    let obj = kube.get(&all).unwrap_or_else(|| panic!("{args:?} exists"));
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["manager"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_controller_installed_with_helm_is_not_taken_over_until_imported() {
    let aws = LocalAws::start(&["--time-scale", "0.002"]);
    let kube = KubeTest::start(&aws.endpoint);
    kube.seed_eks_defaults();
    // Someone installed the controller with Helm before slipway ran.
    let helm = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "aws-load-balancer-controller", "namespace": "kube-system",
                     "labels": {"app.kubernetes.io/managed-by": "Helm"}},
        "spec": {"replicas": 1,
                 "selector": {"matchLabels": {"app.kubernetes.io/name": "aws-load-balancer-controller"}},
                 "template": {"metadata": {"labels": {"app.kubernetes.io/name": "aws-load-balancer-controller"}},
                              "spec": {"containers": [{"name": "controller", "image": "public.ecr.aws/eks/aws-load-balancer-controller:v2.7.0"}]}}},
    });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), helm.to_string()).unwrap();
    let out = kube.kubectl(&[
        "apply",
        "--server-side",
        "--field-manager",
        "helm",
        "-f",
        file.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deployment = [
        "-n",
        "kube-system",
        "deployment",
        "aws-load-balancer-controller",
    ];

    let p = Project::platform_on(&aws, &kube);
    p.run(&["apply", "--auto-approve"])
        .code(1)
        .stdout_has("already exists and is not labelled as this stack's")
        .stdout_has("field managers: helm")
        .stdout_has("slipway import k8s.deployment.kube-system/aws-load-balancer-controller");
    let before = managers(&kube, &deployment);
    assert!(before.contains(&"helm".to_string()), "{before:?}");
    assert!(
        !before.contains(&"slipway".to_string()),
        "not taken over: {before:?}"
    );

    p.run(&[
        "import",
        "k8s.deployment.kube-system/aws-load-balancer-controller",
    ])
    .success()
    .stdout_has("Imported");
    p.run(&["plan"])
        .success()
        // Helm's selector is not slipway's, and a selector cannot change.
        .stdout_has("k8s.deployment.kube-system/aws-load-balancer-controller must be replaced");
    p.run(&["apply", "--auto-approve"]).success();
    assert!(managers(&kube, &deployment).contains(&"slipway".to_string()));
    p.run(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_renamed_cluster_moves_its_objects_to_the_new_one_in_one_apply() {
    let aws = LocalAws::start(&["--time-scale", "0.002"]);
    let old = KubeTest::for_eks_cluster(&aws.endpoint, "smallcase");
    let new = KubeTest::for_eks_cluster(&aws.endpoint, "smallcase-v2");
    let p = Project::platform_through_eks(&aws, &old);
    aws.configure(serde_json::json!({"eks_api_servers": {
        "smallcase": {"endpoint": old.endpoint, "ca_pem": old.ca_pem()},
        "smallcase-v2": {"endpoint": new.endpoint, "ca_pem": new.ca_pem()},
    }}));
    p.run(&["apply", "--auto-approve"]).success();
    assert!(old.get(&["namespace", "smallcase-blue"]).is_some());

    p.edit_stack("name    = \"smallcase\"", "name    = \"smallcase-v2\"");
    p.run(&["plan"])
        .success()
        .stdout_has("-/+ aws.eks_cluster.main")
        .stdout_has("# replaced with aws.eks_cluster.main");
    p.run(&["apply", "--auto-approve", "--allow-protected"])
        .success();
    // The old cluster's objects were deleted from it (through the old
    // connection) and made in the new one (through a new connection).
    assert!(old.get(&["namespace", "smallcase-blue"]).is_none());
    assert!(new.get(&["namespace", "smallcase-blue"]).is_some());
    assert!(
        new.get(&[
            "-n",
            "kube-system",
            "deployment",
            "aws-load-balancer-controller"
        ])
        .is_some()
    );
    assert!(new.auth()["eks_tokens"].as_u64() >= Some(1));
    p.run(&["plan", "--detailed-exitcode"]).code(0);
}
