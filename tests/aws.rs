//! The AWS provider against the local AWS (moto + realism layer, lifecycles
//! on and time-scaled): apply from empty, cheap no-op refresh, in-place
//! updates and replacements, resources deleted behind slipway's back,
//! SIGKILL mid-apply, destroy, and convergence under injected faults.
//! EKS and Kubernetes kinds run against the simulated cloud until their
//! providers exist.

mod common;

use std::time::{Duration, Instant};

use common::Project;
use common::localaws::LocalAws;
use serde_json::{Value, json};

fn launch() -> LocalAws {
    LocalAws::start(&["--time-scale", "0.002"])
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The stack's tagged EC2 objects that exist, as `kind id`, read with each
/// kind's own Describe call (tags can outlive what they tagged).
fn tagged(aws: &LocalAws) -> Vec<String> {
    use aws_sdk_ec2::types::Filter;
    rt().block_on(async {
        let ec2 = aws.ec2().await;
        let f = || {
            Filter::builder()
                .name("tag-key")
                .values("slipway:stack")
                .build()
        };
        let mut out = Vec::new();
        for v in ec2
            .describe_vpcs()
            .filters(f())
            .send()
            .await
            .unwrap()
            .vpcs()
        {
            out.push(format!("vpc {}", v.vpc_id().unwrap_or_default()));
        }
        for n in ec2
            .describe_subnets()
            .filters(f())
            .send()
            .await
            .unwrap()
            .subnets()
        {
            out.push(format!("subnet {}", n.subnet_id().unwrap_or_default()));
        }
        for g in ec2
            .describe_internet_gateways()
            .filters(f())
            .send()
            .await
            .unwrap()
            .internet_gateways()
        {
            out.push(format!(
                "internet-gateway {}",
                g.internet_gateway_id().unwrap_or_default()
            ));
        }
        for t in ec2
            .describe_route_tables()
            .filters(f())
            .send()
            .await
            .unwrap()
            .route_tables()
        {
            out.push(format!(
                "route-table {}",
                t.route_table_id().unwrap_or_default()
            ));
        }
        for g in ec2
            .describe_security_groups()
            .filters(f())
            .send()
            .await
            .unwrap()
            .security_groups()
        {
            out.push(format!(
                "security-group {}",
                g.group_id().unwrap_or_default()
            ));
        }
        for a in ec2
            .describe_addresses()
            .filters(f())
            .send()
            .await
            .unwrap()
            .addresses()
        {
            out.push(format!(
                "elastic-ip {}",
                a.allocation_id().unwrap_or_default()
            ));
        }
        for n in ec2
            .describe_nat_gateways()
            .filter(f())
            .send()
            .await
            .unwrap()
            .nat_gateways()
        {
            if n.state().is_some_and(|s| s.as_str() != "deleted") {
                out.push(format!(
                    "natgateway {}",
                    n.nat_gateway_id().unwrap_or_default()
                ));
            }
        }
        for r in ec2
            .describe_instances()
            .filters(f())
            .send()
            .await
            .unwrap()
            .reservations()
        {
            for i in r.instances() {
                if i.state()
                    .and_then(|s| s.name())
                    .is_some_and(|n| n.as_str() != "terminated")
                {
                    out.push(format!("instance {}", i.instance_id().unwrap_or_default()));
                }
            }
        }
        out
    })
}

#[test]
fn applies_from_empty_converges_and_a_no_op_refresh_is_cheap() {
    let aws = launch();
    let p = Project::reference_on(&aws);
    // Every status change as a "still creating" line: waiting on EKS shows
    // its status and an estimate from EKS's usual duration.
    let out = p
        .command(&["apply", "--auto-approve"])
        .env("SLIPWAY_PROGRESS_INTERVAL", "0")
        .output()
        .unwrap();
    p.finish(&["apply", "--auto-approve"], out)
        .success()
        .stdout_has("Apply complete!")
        .stdout_has("aws.eks_cluster.main: still creating... [")
        .stdout_has("CREATING (about ");
    // A VPC just made has DNS support on already: only DNS hostnames is
    // changed, and the state reads both back as the stack wants them.
    assert_eq!(aws.calls_of("ModifyVpcAttribute"), 1);
    let vpc = &p.state()["resources"]["aws.vpc.main"]["attributes"];
    assert_eq!(
        (&vpc["enable_dns_support"], &vpc["enable_dns_hostnames"]),
        (&json!(true), &json!(true))
    );
    p.run(&["plan", "--detailed-exitcode"])
        .code(0)
        .stdout_has("No changes.");
    // `[ingress] iam_policy_file` replaced the embedded controller policy.
    let policy = &p.state()["resources"]["aws.iam_policy.lb_controller"]["attributes"]["policy"];
    assert_eq!(
        policy["Statement"][0]["Sid"],
        "TestFixtureNotTheControllersPolicy"
    );

    // One read call per resource type, not per resource.
    aws.reset_calls();
    p.run(&["plan", "--detailed-exitcode"]).code(0);
    let calls = aws.calls();
    assert_eq!(
        calls["mutating"], 0,
        "plan must not change anything: {calls}"
    );
    assert_eq!(aws.calls_of("DescribeSubnets"), 1, "{calls}");
    // Tables, routes and associations from one answer; Elastic IPs and
    // their associations too.
    assert_eq!(aws.calls_of("DescribeRouteTables"), 1, "{calls}");
    assert_eq!(aws.calls_of("DescribeAddresses"), 1, "{calls}");
    assert_eq!(aws.calls_of("DescribeSecurityGroups"), 1, "{calls}");
    assert_eq!(aws.calls_of("DescribeSecurityGroupRules"), 1, "{calls}");
    assert_eq!(aws.calls_of("DescribeInstances"), 1, "{calls}");
    assert_eq!(aws.calls_of("DescribeRepositories"), 1, "{calls}");
    // Volumes: the instances' root volumes, and the home volume with its
    // attachment. The root volumes carry the stack's tags but are known as
    // part of their instances, so discovery finds nothing to look into.
    assert_eq!(aws.calls_of("DescribeVolumes"), 2, "{calls}");
    assert_eq!(aws.calls_of("DescribeTags"), 1, "{calls}");
    // The cluster's read also tells the access entries whether their
    // cluster is being deleted.
    assert_eq!(aws.calls_of("DescribeCluster"), 1, "{calls}");
    let total = calls["total"].as_u64().unwrap();
    // About one call per resource type, but IAM reads each role, inline
    // policy and instance profile on its own (three Jenkins identities),
    // EKS each Fargate profile and access entry (two calls: the entry, its
    // access policies), and EC2 each instance's user data: AWS has no
    // batch form of those reads (docs/performance.md).
    assert!(
        total <= 52,
        "{total} calls to refresh ~59 AWS resources: {calls}"
    );
}

#[test]
fn changed_settings_update_in_place_or_replace_and_converge() {
    let aws = launch();
    let p = Project::reference_on(&aws);
    p.run(&["apply", "--auto-approve"]).success();
    let master = p.state()["resources"]["aws.instance.jenkins_master"]["id"].clone();

    // A tag, a security group rule, the image count and the instance type: in place.
    p.edit_stack(
        "region = \"ap-south-1\"",
        "region = \"ap-south-1\"\ntags = { team = \"platform\" }",
    );
    p.edit_stack(
        "allowed_cidrs = [\"203.0.113.0/24\"]",
        "allowed_cidrs = [\"203.0.113.0/24\", \"198.51.100.0/24\"]",
    );
    p.edit_stack("keep_images  = 30", "keep_images  = 10");
    p.edit_stack(
        "instance_type = \"t3.medium\"",
        "instance_type = \"t3.large\"",
    );
    let plan = p.run(&["plan", "--detailed-exitcode"]);
    plan.code(2)
        .stdout_has("~ aws.vpc.main")
        .stdout_has("+ \"team\" = \"platform\"")
        .stdout_has("~ aws.security_group_rule.jenkins_master_https")
        .stdout_has("~ aws.ecr_lifecycle_policy.app")
        .stdout_has("~ aws.instance.jenkins_master")
        .stdout_has("\"t3.medium\" -> \"t3.large\"");
    assert!(
        !plan.stdout.contains("-/+"),
        "nothing here forces a replacement:\n{}",
        plan.stdout
    );
    p.run(&["apply", "--auto-approve"]).success();
    p.run(&["plan", "--detailed-exitcode"]).code(0);
    let state = p.state();
    assert_eq!(
        state["resources"]["aws.instance.jenkins_master"]["id"], master,
        "the type changed in place"
    );
    assert_eq!(
        state["resources"]["aws.instance.jenkins_master"]["attributes"]["instance_type"],
        "t3.large"
    );
    assert_eq!(
        state["resources"]["aws.security_group_rule.jenkins_master_https"]["attributes"]["cidr_blocks"],
        json!(["203.0.113.0/24", "198.51.100.0/24"])
    );

    // The repository URL is baked into the master's first-boot script: a new master.
    p.edit_stack(
        "https://github.com/example/app.git",
        "https://github.com/example/web.git",
    );
    let plan = p.run(&["plan"]);
    plan.success()
        .stdout_has("-/+ aws.instance.jenkins_master")
        .stdout_has("user_data")
        .stdout_has("# forces replacement");
    // Why: the lines of the script that change, not the whole script.
    let diff: Vec<&str> = plan
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("- ") || l.trim_start().starts_with("+ "))
        .filter(|l| l.contains("example/"))
        .collect();
    assert!(
        diff.iter()
            .any(|l| l.contains("- ") && l.contains("example/app.git"))
            && diff
                .iter()
                .any(|l| l.contains("+ ") && l.contains("example/web.git")),
        "{}",
        plan.stdout
    );
    assert!(
        !plan.stdout.contains("dnf install -y java-17"),
        "unchanged lines are left out:\n{}",
        plan.stdout
    );
    p.run(&["apply", "--auto-approve"]).success();
    p.run(&["plan", "--detailed-exitcode"]).code(0);
    assert_ne!(
        p.state()["resources"]["aws.instance.jenkins_master"]["id"],
        master
    );
}

#[test]
fn changing_the_agents_plans_no_change_to_the_master() {
    let aws = launch();
    let p = Project::reference_on(&aws);
    p.run(&["apply", "--auto-approve"]).success();
    p.edit_stack(
        "agents = { count = 1, instance_type = \"t3.large\" }",
        "agents = { count = 2, instance_type = \"t3.xlarge\" }",
    );
    let plan = p.run(&["plan", "--detailed-exitcode"]);
    plan.code(2)
        .stdout_has("aws.instance.jenkins_agent_1")
        .stdout_has("+ aws.instance.jenkins_agent_2");
    let touched: Vec<&str> = plan
        .stdout
        .lines()
        .filter(|l| l.starts_with("  # aws.") || l.starts_with("  # k8s."))
        .collect();
    // The build agents and the production agent (same type), nothing else.
    assert_eq!(touched.len(), 3, "{}", plan.stdout);
    assert!(
        touched
            .iter()
            .all(|l| l.contains("aws.instance.jenkins_agent_")
                || l.contains("aws.instance.jenkins_production_agent")),
        "only agents change:\n{}",
        plan.stdout
    );
    let master = p.state()["resources"]["aws.instance.jenkins_master"]["id"].clone();
    p.run(&["apply", "--auto-approve"]).success();
    p.run(&["plan", "--detailed-exitcode"]).code(0);
    assert_eq!(
        p.state()["resources"]["aws.instance.jenkins_master"]["id"],
        master
    );
    // The new agent carries the tags the master finds agents by.
    let id = p.state()["resources"]["aws.instance.jenkins_agent_2"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let tags = rt().block_on(async {
        aws.ec2()
            .await
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .unwrap()
            .reservations()[0]
            .instances()[0]
            .tags()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_string(),
                    t.value().unwrap_or_default().to_string(),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    });
    assert_eq!(tags["slipway:jenkins-agent"], "agent-2");
    assert_eq!(tags["slipway:jenkins-pool"], "build");
}

#[test]
fn a_resource_deleted_behind_slipways_back_is_detected_and_recreated() {
    let aws = launch();
    let p = Project::reference_on(&aws);
    p.run(&["apply", "--auto-approve"]).success();
    let rule_ids = p.state()["resources"]["aws.security_group_rule.jenkins_master_https"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let group = p.state()["resources"]["aws.security_group.jenkins_master"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    rt().block_on(async {
        let ec2 = aws.ec2().await;
        ec2.revoke_security_group_ingress()
            .group_id(group)
            .set_security_group_rule_ids(Some(rule_ids.split(',').map(str::to_string).collect()))
            .send()
            .await
            .unwrap();
    });
    p.run(&["drift"])
        .code(2)
        .stdout_has("aws.security_group_rule.jenkins_master_https has been deleted");
    p.run(&["plan", "--detailed-exitcode"])
        .code(2)
        .stdout_has("+ aws.security_group_rule.jenkins_master_https");
    p.run(&["apply", "--auto-approve"]).success();
    p.run(&["plan", "--detailed-exitcode"]).code(0);

    // A subnet moved to another route table outside slipway: EC2 gives the
    // move a new association, so the recorded one is gone (tables, routes
    // and associations are read from one DescribeRouteTables of the tables
    // the state names), and the apply moves the subnet back.
    let association = |p: &Project| {
        p.state()["resources"]["aws.route_table_association.private_a"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let moved = association(&p);
    let public = p.state()["resources"]["aws.route_table.public"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    rt().block_on(async {
        aws.ec2()
            .await
            .replace_route_table_association()
            .association_id(&moved)
            .route_table_id(&public)
            .send()
            .await
            .unwrap();
    });
    p.run(&["drift"])
        .code(2)
        .stdout_has("aws.route_table_association.private_a has been deleted");
    p.run(&["apply", "--auto-approve"]).success();
    assert_ne!(association(&p), moved);
    p.run(&["plan", "--detailed-exitcode"]).code(0);

    // A state written before the reads were shared is read as well.
    // Instances recorded without their root volume: discovery looks the
    // volumes up, and neither `plan` nor `drift` reports a change.
    let edit_state = |p: &Project, f: &dyn Fn(&str, &mut serde_json::Map<String, Value>)| {
        let mut state = p.state();
        for (addr, r) in state["resources"].as_object_mut().unwrap() {
            f(addr, r["attributes"].as_object_mut().unwrap());
        }
        std::fs::write(p.state_path(), serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    };
    edit_state(&p, &|addr, attrs| {
        if addr.starts_with("aws.instance.") {
            attrs.remove("root_volume_id").unwrap();
        }
    });
    aws.reset_calls();
    p.run(&["plan", "--detailed-exitcode"]).code(0);
    let calls = aws.calls();
    assert_eq!(aws.calls_of("DescribeTags"), 2, "{calls}");
    assert_eq!(aws.calls_of("DescribeVolumes"), 3, "{calls}");
    p.run(&["drift"]).code(0).stdout_has("No drift");
    // Associations recorded without their table or address are read by
    // their own ids.
    edit_state(&p, &|addr, attrs| {
        if addr.starts_with("aws.route_table_association.") {
            attrs.remove("route_table_id").unwrap();
        } else if addr.starts_with("aws.eip_association.") {
            attrs.remove("allocation_id").unwrap();
        }
    });
    aws.reset_calls();
    p.run(&["plan", "--detailed-exitcode"]).code(0);
    let calls = aws.calls();
    assert_eq!(aws.calls_of("DescribeRouteTables"), 2, "{calls}");
    assert_eq!(aws.calls_of("DescribeAddresses"), 2, "{calls}");
}

#[test]
fn sigkill_mid_apply_and_a_rerun_converge_without_duplicates() {
    let aws = launch();
    let p = Project::reference_on(&aws);
    aws.configure(json!({"latency_ms": 40}));
    let mut child = p
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("a dozen resources", || {
        p.state_path().exists() && p.state_count() >= 12
    });
    child.kill().unwrap();
    child.wait().unwrap();
    aws.configure(json!({"latency_ms": 0}));

    p.run(&["apply", "--auto-approve"]).success();
    p.run(&["plan", "--detailed-exitcode"]).code(0);
    let objects = tagged(&aws);
    let count = |kind: &str| {
        objects
            .iter()
            .filter(|o| o.starts_with(&format!("{kind} ")))
            .count()
    };
    assert_eq!(count("vpc"), 1, "{objects:?}");
    assert_eq!(count("subnet"), 4, "{objects:?}");
    assert_eq!(count("security-group"), 2, "{objects:?}");
    assert_eq!(
        count("instance"),
        3,
        "master, agent, production agent: {objects:?}"
    );
    assert_eq!(count("natgateway"), 1, "{objects:?}");
    assert_eq!(count("internet-gateway"), 1, "{objects:?}");
}

#[test]
fn destroy_leaves_no_tagged_resource() {
    let aws = launch();
    let p = Project::reference_on(&aws);
    p.run(&["apply", "--auto-approve"]).success();
    assert!(!tagged(&aws).is_empty());
    p.run(&["destroy", "--auto-approve", "--allow-protected"])
        .success()
        .stdout_has("Destroy complete!");
    assert_eq!(tagged(&aws), Vec::<String>::new());
    assert_eq!(p.state_count(), 0);
    // IAM and ECR too, which EC2 tags do not cover.
    aws.reset_calls();
    p.run(&["plan", "--detailed-exitcode"]).code(2);
    let listing = rt().block_on(async {
        let creds =
            aws_credential_types::Credentials::new("testing", "testing", None, None, "tests");
        let conf = aws_sdk_iam::Config::builder()
            .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
            .region(aws_sdk_iam::config::Region::new("us-east-1"))
            .endpoint_url(&aws.endpoint)
            .credentials_provider(creds.clone())
            .build();
        let roles = aws_sdk_iam::Client::from_conf(conf)
            .list_roles()
            .send()
            .await
            .unwrap();
        let ecr_conf = aws_sdk_ecr::Config::builder()
            .behavior_version(aws_sdk_ecr::config::BehaviorVersion::latest())
            .region(aws_sdk_ecr::config::Region::new("ap-south-1"))
            .endpoint_url(&aws.endpoint)
            .credentials_provider(creds)
            .build();
        let repos = aws_sdk_ecr::Client::from_conf(ecr_conf)
            .describe_repositories()
            .send()
            .await
            .unwrap();
        (
            roles
                .roles()
                .iter()
                .map(|r| r.role_name().to_string())
                .filter(|n| n.starts_with("smallcase-"))
                .collect::<Vec<_>>(),
            repos.repositories().len(),
        )
    });
    assert_eq!(listing, (Vec::new(), 0));
}

#[test]
fn a_whole_stack_destroy_names_what_still_carries_the_stacks_tags() {
    let aws = launch();
    let p = Project::reference_on(&aws);
    p.run(&["apply", "--auto-approve"]).success();
    // Someone made a VPC with the stack's tags that the state never knew.
    let stray = rt().block_on(async {
        use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        aws.ec2()
            .await
            .create_vpc()
            .cidr_block("10.9.0.0/16")
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Vpc)
                    .tags(tag("slipway:stack", "smallcase"))
                    .tags(tag("slipway:address", "aws.vpc.stray"))
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .vpc()
            .unwrap()
            .vpc_id()
            .unwrap()
            .to_string()
    });
    p.run(&["destroy", "--auto-approve", "--allow-protected"])
        .code(1)
        .stdout_has("Destroy complete!")
        .stderr_has("1 object(s) still carry the tags or labels of stack `smallcase`")
        .stderr_has(&format!("`aws.vpc.stray` (`{stray}`)"))
        .stderr_has("slipway import");
    assert_eq!(p.state_count(), 0);
}

#[test]
fn apply_converges_through_throttling_and_server_errors() {
    let aws = launch();
    let p = Project::reference_on(&aws);
    aws.configure(json!({"seed": 7, "faults": {"rate": 0.1, "kinds": ["throttle", "500", "503"]}}));
    p.run(&["apply", "--auto-approve"])
        .success()
        .stdout_has("Apply complete!");
    let injected: u64 = aws.calls()["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["faults"].as_u64().unwrap_or(0))
        .sum();
    assert!(injected >= 5, "faults were injected ({injected})");
    p.run(&["plan", "--detailed-exitcode"]).code(0);
    aws.configure(json!({"faults": {"rate": 0.0}}));
    p.run(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_fargate_profile_waits_while_eks_changes_another_one() {
    let aws = launch();
    let p = Project::reference_on(&aws);
    p.run(&["apply", "--auto-approve"]).success();

    // Someone else starts a Fargate profile change that lasts ~12 s: longer
    // than the apply below takes to reach its own profile, even on a
    // loaded machine.
    aws.configure(json!({"durations": {"eks_fargate_profile_create": 6000}}));
    let state = p.state();
    let role = state["resources"]["aws.iam_role.fargate_pod_execution"]["attributes"]["arn"]
        .as_str()
        .unwrap()
        .to_string();
    let subnet = state["resources"]["aws.subnet.private_a"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    rt().block_on(async {
        let eks = aws.eks().await;
        eks.create_fargate_profile()
            .cluster_name("smallcase")
            .fargate_profile_name("someone-else")
            .pod_execution_role_arn(role)
            .subnets(subnet)
            .selectors(
                aws_sdk_eks::types::FargateProfileSelector::builder()
                    .namespace("elsewhere")
                    .build(),
            )
            .send()
            .await
            .unwrap();
    });

    // A new environment needs a profile of its own meanwhile.
    p.edit_stack(
        "[environments.develop]",
        "[environments.qa]\nbranch = \"qa\"\nnamespace = \"smallcase-qa\"\noverlay = \"k8s/overlays/develop\"\n\n[environments.develop]",
    );
    aws.reset_calls();
    let run = p.run(&["apply", "--auto-approve"]);
    run.success().stdout_has("aws.eks_fargate_profile.qa");
    assert!(
        !run.stdout.contains("ResourceInUseException")
            && !run.stderr.contains("ResourceInUseException"),
        "{}",
        run.stdout
    );
    assert!(
        aws.calls_of("CreateFargateProfile") >= 2,
        "EKS refused at least once: {}",
        aws.calls()
    );
    p.run(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn cluster_admins_get_admin_access_and_jenkins_gets_no_more_than_its_namespaces() {
    let aws = launch();
    let p = Project::reference_on(&aws);
    p.edit_stack(
        "[cluster]\n",
        "[cluster]\nadmins = [\"arn:aws:iam::123456789012:role/ci\"]\n",
    );
    p.run(&["apply", "--auto-approve"]).success();
    let rt = rt();
    let policies = |principal: &str| {
        rt.block_on(async {
            aws.eks()
                .await
                .list_associated_access_policies()
                .cluster_name("smallcase")
                .principal_arn(principal)
                .send()
                .await
                .unwrap()
                .associated_access_policies()
                .iter()
                .map(|p| {
                    (
                        p.policy_arn().unwrap_or_default().to_string(),
                        p.access_scope()
                            .and_then(|s| s.r#type())
                            .map(|t| t.as_str().to_string())
                            .unwrap_or_default(),
                    )
                })
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(
        policies("arn:aws:iam::123456789012:role/ci"),
        vec![(
            "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy".to_string(),
            "cluster".to_string()
        )]
    );
    let jenkins = "arn:aws:iam::123456789012:role/smallcase-jenkins-agent";
    assert!(policies(jenkins).is_empty());

    // Someone opens the cluster to Jenkins: plan shows it, apply closes it.
    rt.block_on(async {
        aws.eks()
            .await
            .associate_access_policy()
            .cluster_name("smallcase")
            .principal_arn(jenkins)
            .policy_arn("arn:aws:eks::aws:cluster-access-policy/AmazonEKSAdminViewPolicy")
            .access_scope(
                aws_sdk_eks::types::AccessScope::builder()
                    .r#type(aws_sdk_eks::types::AccessScopeType::Cluster)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    });
    p.run(&["plan", "--detailed-exitcode"])
        .code(2)
        .stdout_has("~ aws.eks_access_entry.jenkins_agent")
        .stdout_has("AmazonEKSAdminViewPolicy");
    p.run(&["apply", "--auto-approve"]).success();
    assert!(policies(jenkins).is_empty());
    p.run(&["plan", "--detailed-exitcode"]).code(0);
}

/// An HTTP proxy on 127.0.0.1 that refuses every `CONNECT` with 403, as a
/// corporate proxy does for hosts it does not allow; returns its port and
/// the request lines it was sent.
fn refusing_proxy() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = asked.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut lines = BufReader::new(conn.try_clone().unwrap()).lines();
            if let Some(Ok(first)) = lines.next() {
                record.lock().unwrap().push(first);
            }
            // The rest of the head, up to its empty line.
            while let Some(Ok(line)) = lines.next() {
                if line.is_empty() {
                    break;
                }
            }
            let _ = conn.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (port, asked)
}

#[test]
fn an_oidc_issuer_the_proxy_will_not_reach_is_registered_without_a_thumbprint() {
    let aws = launch();
    let p = Project::reference_on(&aws);
    let (proxy, asked) = refusing_proxy();
    let out = p
        .command(&["apply", "--auto-approve"])
        .env("HTTPS_PROXY", format!("http://127.0.0.1:{proxy}"))
        .env_remove("https_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    let issuer_port = aws.oidc()["port"].as_u64().unwrap();
    // The warning is in the run's report, progress settings or not.
    p.finish(&["apply", "--auto-approve"], out)
        .success()
        .stdout_has("Apply complete!")
        .stdout_has("warning: aws.iam_openid_connect_provider.eks: cannot reach the OIDC issuer `https://localhost:")
        .stdout_has(&format!(
            "the proxy `127.0.0.1:{proxy}` (HTTPS_PROXY) refused CONNECT `localhost:{issuer_port}`"
        ))
        .stdout_has("registering it without a thumbprint, which IAM retrieves itself");
    // Every attempt went to the proxy, none straight to the issuer.
    let asked = asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        vec![format!("CONNECT localhost:{issuer_port} HTTP/1.1"); 3]
    );
    // IAM obtained the thumbprint itself; the state holds what IAM has, so
    // neither plan nor drift finds anything afterwards.
    let oidc = &p.state()["resources"]["aws.iam_openid_connect_provider.eks"]["attributes"];
    assert_eq!(oidc["thumbprint_list"], json!([aws.oidc()["thumbprint"]]));
    p.run(&["plan", "--detailed-exitcode"])
        .code(0)
        .stdout_has("No changes.");
    p.run(&["drift"]).success().stdout_has("No drift");
}

#[test]
fn a_trust_policy_naming_a_role_made_moments_ago_is_retried_until_iam_catches_up() {
    let aws = launch();
    // IAM refuses a new role as a principal for 1.5 s after it is made: the
    // drift role trusts the Jenkins role created just before it.
    aws.configure(json!({"iam_principal_propagation_ms": 1500}));
    let p = Project::reference_on(&aws);
    let run = p.run(&["apply", "--auto-approve"]);
    run.success();
    assert!(
        !run.stdout.contains("MalformedPolicyDocument")
            && !run.stderr.contains("MalformedPolicyDocument"),
        "{}",
        run.stdout
    );
    let roles = p.state()["resources"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|a| a.starts_with("aws.iam_role."))
        .count() as u64;
    assert!(
        aws.calls_of("CreateRole") > roles,
        "IAM refused at least once: {}",
        aws.calls()
    );
    p.run(&["plan", "--detailed-exitcode"]).code(0);
}

/// The volume's zone, encryption and the instances it is attached to.
fn volume(aws: &LocalAws, id: &str) -> (String, bool, Vec<String>) {
    rt().block_on(async {
        let out = aws
            .ec2()
            .await
            .describe_volumes()
            .volume_ids(id)
            .send()
            .await
            .unwrap();
        let v = &out.volumes()[0];
        (
            v.availability_zone().unwrap_or_default().to_string(),
            v.encrypted().unwrap_or(false),
            v.attachments()
                .iter()
                .filter_map(|a| a.instance_id().map(str::to_string))
                .collect(),
        )
    })
}

#[test]
fn jenkins_home_outlives_the_master_on_its_own_protected_volume() {
    let aws = launch();
    let p = Project::reference_on(&aws);
    p.run(&["apply", "--auto-approve"]).success();
    let state = p.state();
    let home = state["resources"]["aws.ebs_volume.jenkins_home"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let master = state["resources"]["aws.instance.jenkins_master"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let zone = state["resources"]["aws.subnet.public_a"]["attributes"]["availability_zone"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        volume(&aws, &home),
        (zone.clone(), true, vec![master.clone()])
    );
    assert!(
        state["resources"]["aws.instance.jenkins_master"]["attributes"]["user_data"]
            .as_str()
            .unwrap()
            .contains(&format!("HOME_VOLUME='{home}'")),
        "the master mounts it"
    );

    // A new master (its first-boot script changed): the volume stays and
    // is attached to the new one.
    p.edit_stack(
        "https://github.com/example/app.git",
        "https://github.com/example/web.git",
    );
    let plan = p.run(&["plan", "--json"]);
    let doc = plan.json();
    let action = |a: &str| {
        doc["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["address"] == a)
            .map(|c| c["action"].as_str().unwrap().to_string())
    };
    assert_eq!(
        action("aws.instance.jenkins_master").as_deref(),
        Some("replace")
    );
    assert_eq!(
        action("aws.volume_attachment.jenkins_home").as_deref(),
        Some("replace")
    );
    assert_eq!(
        action("aws.ebs_volume.jenkins_home").as_deref(),
        Some("no-op")
    );
    p.run(&["apply", "--auto-approve"])
        .success()
        .stdout_has("aws.volume_attachment.jenkins_home");
    let state = p.state();
    let new_master = state["resources"]["aws.instance.jenkins_master"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_master, master);
    assert_eq!(
        state["resources"]["aws.ebs_volume.jenkins_home"]["id"],
        home.as_str()
    );
    assert_eq!(volume(&aws, &home), (zone, true, vec![new_master.clone()]));
    // The same Elastic IP, now on the new master: the URL stays.
    let allocation = state["resources"]["aws.eip.jenkins_master"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(action("aws.eip.jenkins_master").as_deref(), Some("no-op"));
    assert_eq!(
        action("aws.eip_association.jenkins_master").as_deref(),
        Some("replace")
    );
    let on = rt().block_on(async {
        aws.ec2()
            .await
            .describe_addresses()
            .allocation_ids(&allocation)
            .send()
            .await
            .unwrap()
            .addresses()[0]
            .instance_id()
            .map(str::to_string)
    });
    assert_eq!(on.as_deref(), Some(new_master.as_str()));
    assert_eq!(
        state["resources"]["aws.eip_association.jenkins_master"]["attributes"]["instance_id"],
        new_master.as_str()
    );
    p.run(&["plan", "--detailed-exitcode"]).code(0);

    // Someone moves the address off the master: drift says so, apply puts it back.
    let association = state["resources"]["aws.eip_association.jenkins_master"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    rt().block_on(async {
        aws.ec2()
            .await
            .disassociate_address()
            .association_id(association)
            .send()
            .await
            .unwrap();
    });
    p.run(&["drift"])
        .code(2)
        .stdout_has("aws.eip_association.jenkins_master has been deleted");
    p.run(&["apply", "--auto-approve"]).success();
    p.run(&["plan", "--detailed-exitcode"]).code(0);

    // It grows in place, and is never deleted without --allow-protected.
    p.edit_stack(
        "allowed_cidrs = [\"203.0.113.0/24\"] }",
        "allowed_cidrs = [\"203.0.113.0/24\"], home_volume_size = 80 }",
    );
    p.run(&["plan"])
        .success()
        .stdout_has("~ aws.ebs_volume.jenkins_home");
    p.run(&["apply", "--auto-approve"]).success();
    assert_eq!(
        p.state()["resources"]["aws.ebs_volume.jenkins_home"]["attributes"]["size"],
        80
    );
    p.edit_stack("home_volume_size = 80", "home_volume_size = 60");
    p.run(&["apply", "--auto-approve"])
        .code(1)
        .stdout_has("EBS volumes cannot shrink");
    let destroy = p
        .run(&["plan", "--destroy", "--allow-protected", "--json"])
        .json();
    let volume_change = destroy["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "aws.ebs_volume.jenkins_home")
        .unwrap();
    assert_eq!(volume_change["protected"], true, "it holds Jenkins' data");
}

#[test]
fn the_identity_check_goes_beside_the_reads_and_a_refusal_is_the_one_error() {
    let aws = launch();
    let p = Project::reference_on(&aws);
    p.run(&["apply", "--auto-approve"]).success();

    // STS is asked beside the reads, not before them: with 300 ms per
    // call, reads arrive while GetCallerIdentity is still unanswered.
    aws.configure(json!({"latency_ms": 300}));
    aws.reset_calls();
    p.run(&["plan", "--detailed-exitcode"]).code(0);
    let log = aws.timed_call_log();
    let at = |c: &serde_json::Value, key: &str| c[key].as_f64().unwrap();
    let sts = log
        .iter()
        .find(|c| c["operation"] == "GetCallerIdentity")
        .expect("the identity is checked");
    let first_read = log
        .iter()
        .filter(|c| c["service"] == "ec2")
        .map(|c| at(c, "arrived"))
        .fold(f64::INFINITY, f64::min);
    assert!(
        first_read < at(sts, "answered"),
        "the reads waited for STS: {log:?}"
    );

    // Every call refused (expired credentials): the identity's refusal is
    // the one error, not one per read.
    aws.configure(json!({"latency_ms": 0, "faults": {"rate": 1.0, "kinds": ["denied"]}}));
    for verb in [
        &["plan"][..],
        &["drift"][..],
        &["apply", "--auto-approve"][..],
    ] {
        let run = p.run(verb);
        run.code(1)
            .stderr_has("AWS rejected the credentials")
            .stderr_has("InvalidClientTokenId")
            .stderr_has("hint: check that the credentials are current");
        assert_eq!(
            run.stderr.matches("error:").count(),
            1,
            "{verb:?}: one error:\n{}",
            run.stderr
        );
    }

    // Only STS refuses, every read succeeds: the run still stops there,
    // before anything changes (a fresh state would create everything).
    aws.configure(json!({"faults": {"rate": 1.0, "kinds": ["denied"],
        "operations": ["GetCallerIdentity"]}}));
    let fresh = Project::reference_on(&aws);
    aws.reset_calls();
    fresh
        .run(&["apply", "--auto-approve"])
        .code(1)
        .stderr_has("AWS rejected the credentials");
    let calls = aws.calls();
    assert_eq!(calls["mutating"], 0, "nothing changed: {calls}");
}
