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
fn controller_leftovers(aws: &LocalAws, subnets: Vec<String>) -> (String, String) {
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
            .vpc_id(vpc)
            .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Ip)
            .tags(tag(CLUSTER_TAG, "smallcase"))
            .send()
            .await
            .unwrap();
        let tg_arn = tg.target_groups()[0]
            .target_group_arn()
            .unwrap()
            .to_string();
        (lb_arn, tg_arn)
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
        .stdout_has("-/+ aws.eks_access_entry.jenkins")
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
    assert!(p.state()["resources"].get("aws.subnet.private_c").is_none());
}
