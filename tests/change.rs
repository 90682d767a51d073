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
        .stdout_has("-/+ aws.iam_openid_connect_provider.eks")
        .stdout_has("~ aws.iam_role.lb_controller")
        .stdout_has("# replaced with aws.eks_cluster.main")
        .stdout_has("- aws.subnet.private_c");

    // The protected environment's namespace and profile are replaced: that
    // needs saying so.
    p.run(&["apply", "--auto-approve"])
        .code(1)
        .stderr_has("protected")
        .stderr_has("--allow-protected");

    aws.reset_calls();
    let run = p.run(&["apply", "--auto-approve", "--allow-protected"]);
    run.success().stdout_has("Apply complete!");
    let log = aws.call_log();
    let at = |op: &str| log.iter().position(|(_, o)| o == op);
    let last_lb_delete = log.iter().rposition(|(_, o)| o == "DeleteLoadBalancer");
    assert!(
        last_lb_delete.is_some() && last_lb_delete < at("DeleteCluster"),
        "the controller's load balancers go before the cluster: {log:?}"
    );
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

const BLUE: &str = r#"[environments.blue]    # production
branch    = "master"
namespace = "smallcase-blue"
overlay   = "k8s/overlays/blue"
protected = true       # destroy/teardown needs an explicit flag
promote_from = "green" # only digests verified in green may run here
"#;

/// Pushes a (one-layer) image to the repository, as a build would.
fn push_image(aws: &LocalAws, repository: &str, tag: &str) {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": 2, "digest": format!("sha256:{}", "c".repeat(64))},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": 2, "digest": format!("sha256:{}", "d".repeat(64))}],
    });
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        aws.ecr()
            .await
            .put_image()
            .repository_name(repository)
            .image_manifest(manifest.to_string())
            .image_tag(tag)
            .send()
            .await
            .unwrap();
    });
}

fn image_tags(aws: &LocalAws, repository: &str) -> Vec<String> {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        aws.ecr()
            .await
            .describe_images()
            .repository_name(repository)
            .send()
            .await
            .map(|o| {
                o.image_details()
                    .iter()
                    .flat_map(|d| d.image_tags().to_vec())
                    .collect()
            })
            .unwrap_or_default()
    })
}

#[test]
fn on_the_local_aws_what_holds_data_is_refused_unasked_and_interruptions_leave_no_lock() {
    let aws = LocalAws::start(&["--time-scale", "0.002"]);
    let kube = KubeTest::start(&aws.endpoint);
    kube.seed_eks_defaults();
    let p = Project::platform_on(&aws, &kube);
    p.run(&["apply", "--auto-approve"]).success();
    push_image(&aws, "smallcase/app", "v1");
    let serial = p.state()["serial"].clone();
    let lock = p.path("state/smallcase.json.lock");

    // `blue` removed from the stack: shown by plan, refused by apply.
    p.edit_stack(BLUE, "");
    p.run(&["plan"])
        .success()
        .stdout_has("- k8s.namespace.smallcase-blue")
        .stdout_has("- aws.eks_fargate_profile.blue")
        .stdout_has("# protected: applying this needs --allow-protected");
    p.run(&["apply", "--auto-approve"])
        .code(1)
        .stderr_has("k8s.namespace.smallcase-blue")
        .stderr_has("--allow-protected");
    assert!(kube.get(&["namespace", "smallcase-blue"]).is_some());
    p.edit_stack(
        "[environments.green]",
        &format!("{BLUE}\n[environments.green]"),
    );

    // A renamed repository would take its images with it: refused, and the
    // images stay.
    p.edit_stack(
        r#"repository   = "smallcase/app""#,
        r#"repository   = "smallcase/web""#,
    );
    p.run(&["apply", "--auto-approve"])
        .code(1)
        .stderr_has("aws.ecr_repository.app")
        .stderr_has("--allow-protected");
    assert_eq!(image_tags(&aws, "smallcase/app"), vec!["v1".to_string()]);
    p.edit_stack(
        r#"repository   = "smallcase/web""#,
        r#"repository   = "smallcase/app""#,
    );
    assert_eq!(p.state()["serial"], serial, "refused applies write nothing");
    assert!(!lock.exists());

    // An empty lock file (a crash while it was written, on a filesystem
    // that lost it) is reported as such and cleared by `unlock --force`.
    std::fs::write(&lock, "").unwrap();
    p.run(&["apply", "--auto-approve"])
        .code(1)
        .stderr_has("empty");
    p.run(&["state", "unlock", "--force"]).success();
    p.run(&["plan", "--detailed-exitcode"]).code(0);

    // SIGINT while the refresh waits on slow reads: exit 130 at once, no
    // lock left, nothing changed.
    p.edit_stack("keep_images  = 30", "keep_images  = 31");
    aws.configure(serde_json::json!({"latency_ms": 2000}));
    aws.reset_calls();
    let args = ["apply", "--auto-approve"];
    let child = common::spawn(&p, &args);
    let started = std::time::Instant::now();
    while !lock.exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    common::send_signal(child.id(), "INT");
    common::finished(&p, &args, child)
        .code(130)
        .stderr_has("interrupted before any change was made");
    aws.configure(serde_json::json!({"latency_ms": 0}));
    assert!(!lock.exists(), "the lock is released");
    assert_eq!(aws.calls()["mutating"], 0, "{}", aws.calls());
    assert_eq!(p.state()["serial"], serial);
    p.run(&["apply", "--auto-approve"]).success();
}

/// Tags of an EC2 object, as EC2 describes them.
fn ec2_tags(tags: &[aws_sdk_ec2::types::Tag]) -> Vec<aws_sdk_ec2::types::Tag> {
    tags.iter()
        .filter(|t| !t.key().unwrap_or_default().starts_with("aws:"))
        .cloned()
        .collect()
}

#[test]
fn on_the_local_aws_a_security_group_in_use_is_replaced_by_moving_its_users_first() {
    use aws_sdk_ec2::types::{Filter, ResourceType, TagSpecification};
    let aws = LocalAws::start(&["--time-scale", "0.002"]);
    let kube = KubeTest::start(&aws.endpoint);
    kube.seed_eks_defaults();
    let p = Project::platform_on(&aws, &kube);
    p.run(&["apply", "--auto-approve"]).success();
    let sg = "aws.security_group.jenkins_master";
    let state = p.state();
    let current = state["resources"][sg]["id"].as_str().unwrap().to_string();
    let instance = state["resources"]["aws.instance.jenkins_master"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // As an older naming scheme made it: the master runs in a group named
    // otherwise (which forces a new one), and nothing else refers to the
    // group of the current name.
    let old = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let ec2 = aws.ec2().await;
        let group = ec2
            .describe_security_groups()
            .group_ids(&current)
            .send()
            .await
            .unwrap()
            .security_groups()[0]
            .clone();
        let old = ec2
            .create_security_group()
            .group_name(format!("{}-v0", group.group_name().unwrap()))
            .description(group.description().unwrap())
            .vpc_id(group.vpc_id().unwrap())
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::SecurityGroup)
                    .set_tags(Some(ec2_tags(group.tags())))
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .group_id()
            .unwrap()
            .to_string();
        ec2.modify_instance_attribute()
            .instance_id(&instance)
            .groups(&old)
            .send()
            .await
            .unwrap();
        // Other groups' rules that name it (moto has no
        // `referenced-group-id` filter: look through them all).
        let all = ec2.describe_security_groups().send().await.unwrap();
        for other in all.security_groups() {
            if other.group_id() == Some(current.as_str()) {
                continue;
            }
            for perm in other.ip_permissions() {
                if perm
                    .user_id_group_pairs()
                    .iter()
                    .any(|p| p.group_id() == Some(current.as_str()))
                {
                    ec2.revoke_security_group_ingress()
                        .group_id(other.group_id().unwrap())
                        .ip_permissions(perm.clone())
                        .send()
                        .await
                        .unwrap();
                }
            }
        }
        ec2.delete_security_group()
            .group_id(&current)
            .send()
            .await
            .unwrap();
        old
    });
    let path = p.state_path();
    let mut st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    st["resources"][sg]["id"] = serde_json::json!(old);
    std::fs::write(&path, serde_json::to_string_pretty(&st).unwrap()).unwrap();

    p.run(&["plan"])
        .success()
        .stdout_has("+/- aws.security_group.jenkins_master")
        .stdout_has("the replacement is created first")
        .stdout_has("~ aws.instance.jenkins_master");
    // The local AWS refuses to delete a group still in use, as EC2 does.
    let run = p.run(&["apply", "--auto-approve"]);
    run.success();
    assert!(
        !run.stdout.contains("DependencyViolation") && !run.stderr.contains("DependencyViolation"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    let new = p.state()["resources"][sg]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new, old);
    let (groups, old_left) = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let ec2 = aws.ec2().await;
        let described = ec2
            .describe_instances()
            .instance_ids(&instance)
            .send()
            .await
            .unwrap();
        let groups: Vec<String> = described.reservations()[0].instances()[0]
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect();
        let left = ec2
            .describe_security_groups()
            .filters(Filter::builder().name("group-id").values(&old).build())
            .send()
            .await
            .map(|o| o.security_groups().len())
            .unwrap_or(0);
        (groups, left)
    });
    assert_eq!(groups, vec![new.clone()]);
    assert_eq!(old_left, 0, "the old group is gone");
    assert!(
        p.state()["resources"]
            .get(format!("{sg}.deposed"))
            .is_none()
    );
    p.run(&["plan", "--detailed-exitcode"]).code(0);
}

fn untag_look_alikes(aws: &LocalAws, role: &str, repository_arn: &str) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let iam = aws.iam().await;
        let tags = iam.list_role_tags().role_name(role).send().await.unwrap();
        iam.untag_role()
            .role_name(role)
            .set_tag_keys(Some(
                tags.tags().iter().map(|t| t.key().to_string()).collect(),
            ))
            .send()
            .await
            .unwrap();
        let ecr = aws.ecr().await;
        let tags = ecr
            .list_tags_for_resource()
            .resource_arn(repository_arn)
            .send()
            .await
            .unwrap();
        ecr.untag_resource()
            .resource_arn(repository_arn)
            .set_tag_keys(Some(
                tags.tags().iter().map(|t| t.key().to_string()).collect(),
            ))
            .send()
            .await
            .unwrap();
    });
}

#[test]
fn on_the_local_aws_untagged_look_alikes_are_refused_until_imported() {
    let aws = LocalAws::start(&["--time-scale", "0.002"]);
    let kube = KubeTest::start(&aws.endpoint);
    kube.seed_eks_defaults();
    let p = Project::platform_on(&aws, &kube);
    p.run(&["apply", "--auto-approve"]).success();
    let (role, repo) = ("aws.iam_role.jenkins_agent", "aws.ecr_repository.app");
    let state = p.state();
    let role_id = state["resources"][role]["id"].as_str().unwrap().to_string();
    let role_name = state["resources"][role]["attributes"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let repo_id = state["resources"][repo]["id"].as_str().unwrap().to_string();
    let repo_arn = state["resources"][repo]["attributes"]["arn"]
        .as_str()
        .unwrap()
        .to_string();

    // Forgotten, and their tags gone: as if someone else had made them.
    p.run(&["state", "rm", role]).success();
    p.run(&["state", "rm", repo]).success();
    untag_look_alikes(&aws, &role_name, &repo_arn);
    p.run(&["plan"])
        .success()
        .stdout_has(&format!("+ {role}"))
        .stdout_has(&format!("+ {repo}"));
    let refused = p.run(&["apply", "--auto-approve"]);
    refused
        .code(1)
        .stdout_has(&format!(
            "IAM role `{role_name}` already exists and is not tagged"
        ))
        .stdout_has(&format!("slipway import {role} {role_id}"))
        .stdout_has("ECR repository `smallcase/app` already exists and is not tagged")
        .stdout_has(&format!("slipway import {repo} {repo_id}"));

    // Adopted explicitly, they are the stack's again: re-tagged, and only
    // one of each.
    p.run(&["import", role, &role_id]).success();
    p.run(&["import", repo, &repo_id]).success();
    p.run(&["plan", "--detailed-exitcode"])
        .code(2)
        .stdout_has(&format!("~ {role}"))
        .stdout_has(&format!("~ {repo}"));
    p.run(&["apply", "--auto-approve"]).success();
    p.run(&["plan", "--detailed-exitcode"]).code(0);
    let objects = aws.objects_by_address();
    assert_eq!(objects.get(role).map(Vec::len), Some(1), "{objects:?}");
    assert_eq!(objects.get(repo).map(Vec::len), Some(1), "{objects:?}");
}
