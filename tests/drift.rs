//! `slipway drift` against the local AWS: every kind of finding, in every
//! service slipway uses, read-only. Kubernetes kinds run against the
//! simulated cloud here; tests/platform.rs and tests/deploy.rs cover the
//! cluster.

mod common;

use common::Project;
use common::localaws::LocalAws;
use serde_json::{Value, json};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn id_of(p: &Project, addr: &str) -> String {
    p.state()["resources"][addr]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{addr} is in the state"))
        .to_string()
}

fn stack_tags(address: Option<&str>) -> Vec<(String, String)> {
    let mut t = vec![("slipway:stack".to_string(), "smallcase".to_string())];
    if let Some(a) = address {
        t.push(("slipway:address".to_string(), a.to_string()));
    }
    t
}

/// Findings of `kind` as `(address, id, path)`.
fn of_kind<'d>(doc: &'d Value, kind: &str) -> Vec<(&'d str, &'d str, &'d str)> {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == kind)
        .map(|f| {
            (
                f["address"].as_str().unwrap_or_default(),
                f["id"].as_str().unwrap_or_default(),
                f["path"].as_str().unwrap_or_default(),
            )
        })
        .collect()
}

/// Everything someone might do behind slipway's back, in each service.
fn tamper(aws: &LocalAws, p: &Project) -> Value {
    let master_sg = id_of(p, "aws.security_group.jenkins_master");
    let role = id_of(p, "aws.iam_role.jenkins_agent");
    let table = id_of(p, "aws.route_table.public");
    let igw = id_of(p, "aws.internet_gateway.main");
    let master = id_of(p, "aws.instance.jenkins_master");
    let pod_role =
        p.state()["resources"]["aws.iam_role.fargate_pod_execution"]["attributes"]["arn"]
            .as_str()
            .unwrap()
            .to_string();
    let subnet = id_of(p, "aws.subnet.private_a");
    rt().block_on(async {
        let ec2 = aws.ec2().await;
        let iam = aws.iam().await;
        let ecr = aws.ecr().await;
        let eks = aws.eks().await;
        let elbv2 = aws.elbv2().await;

        // A rule added to a managed security group.
        let rule = ec2
            .authorize_security_group_ingress()
            .group_id(&master_sg)
            .ip_permissions(
                aws_sdk_ec2::types::IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(2222)
                    .to_port(2222)
                    .ip_ranges(
                        aws_sdk_ec2::types::IpRange::builder()
                            .cidr_ip("10.9.0.0/16")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let rule = rule.security_group_rules()[0]
            .security_group_rule_id()
            .unwrap()
            .to_string();
        // A policy attached to, and one put into, a managed role.
        iam.attach_role_policy()
            .role_name(&role)
            .policy_arn("arn:aws:iam::aws:policy/ReadOnlyAccess")
            .send()
            .await
            .unwrap();
        iam.put_role_policy()
            .role_name(&role)
            .policy_name("sneaky")
            .policy_document(
                json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        // A route added to a managed route table.
        ec2.create_route()
            .route_table_id(&table)
            .destination_cidr_block("10.50.0.0/16")
            .gateway_id(&igw)
            .send()
            .await
            .unwrap();
        // "Launch more like this": a copy of the master with its tags, and
        // a stray with only the stack tag.
        let described = ec2
            .describe_instances()
            .instance_ids(&master)
            .send()
            .await
            .unwrap();
        let original = &described.reservations()[0].instances()[0];
        let launch = |tags: Vec<(String, String)>| {
            let ec2 = ec2.clone();
            let image = original.image_id().unwrap().to_string();
            let subnet = original.subnet_id().unwrap().to_string();
            async move {
                let spec = aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                    .set_tags(Some(
                        tags.into_iter()
                            .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
                            .collect(),
                    ))
                    .build();
                ec2.run_instances()
                    .image_id(image)
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                    .subnet_id(subnet)
                    .min_count(1)
                    .max_count(1)
                    .tag_specifications(spec)
                    .send()
                    .await
                    .unwrap()
                    .instances()[0]
                    .instance_id()
                    .unwrap()
                    .to_string()
            }
        };
        let copy = launch(stack_tags(Some("aws.instance.jenkins_master"))).await;
        let stray = launch(stack_tags(None)).await;

        // Tagged as the stack's in IAM, ECR, ELBv2: never tracked.
        let iam_tags = |address: &str| {
            stack_tags(Some(address))
                .into_iter()
                .map(|(k, v)| aws_sdk_iam::types::Tag::builder().key(k).value(v).build().unwrap())
                .collect::<Vec<_>>()
        };
        iam.create_role()
            .role_name("smallcase-stray")
            .assume_role_policy_document(
                json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
                    .to_string(),
            )
            .set_tags(Some(iam_tags("aws.iam_role.stray")))
            .send()
            .await
            .unwrap();
        iam.create_instance_profile()
            .instance_profile_name("smallcase-stray")
            .set_tags(Some(iam_tags("aws.iam_instance_profile.stray")))
            .send()
            .await
            .unwrap();
        iam.create_policy()
            .policy_name("smallcase-stray")
            .policy_document(
                json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]})
                    .to_string(),
            )
            .set_tags(Some(iam_tags("aws.iam_policy.stray")))
            .send()
            .await
            .unwrap();
        iam.create_open_id_connect_provider()
            .url("https://stray.example.com/id")
            .client_id_list("sts.amazonaws.com")
            .thumbprint_list("a".repeat(40))
            .set_tags(Some(iam_tags("aws.iam_openid_connect_provider.stray")))
            .send()
            .await
            .unwrap();
        ecr.create_repository()
            .repository_name("smallcase/stray")
            .set_tags(Some(
                stack_tags(Some("aws.ecr_repository.stray"))
                    .into_iter()
                    .map(|(k, v)| aws_sdk_ecr::types::Tag::builder().key(k).value(v).build().unwrap())
                    .collect(),
            ))
            .send()
            .await
            .unwrap();
        let lb = elbv2
            .create_load_balancer()
            .name("smallcase-stray")
            .subnets(&subnet)
            .subnets(id_of(p, "aws.subnet.private_b"))
            .set_tags(Some(
                stack_tags(None)
                    .into_iter()
                    .map(|(k, v)| {
                        aws_sdk_elasticloadbalancingv2::types::Tag::builder()
                            .key(k)
                            .value(v)
                            .build()
                    })
                    .collect(),
            ))
            .send()
            .await
            .unwrap();
        let lb = lb.load_balancers()[0]
            .load_balancer_arn()
            .unwrap()
            .to_string();

        // A Fargate profile and an access entry added to the managed cluster.
        eks.create_fargate_profile()
            .cluster_name("smallcase")
            .fargate_profile_name("someone-else")
            .pod_execution_role_arn(&pod_role)
            .subnets(&subnet)
            .selectors(
                aws_sdk_eks::types::FargateProfileSelector::builder()
                    .namespace("elsewhere")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let intruder = "arn:aws:iam::123456789012:role/intruder";
        eks.create_access_entry()
            .cluster_name("smallcase")
            .principal_arn(intruder)
            .send()
            .await
            .unwrap();
        json!({"rule": rule, "copy": copy, "stray": stray, "lb": lb, "master": master, "intruder": intruder})
    })
}

#[test]
fn drift_finds_every_kind_of_change_in_every_service_and_changes_nothing() {
    let aws = LocalAws::start(&["--time-scale", "0.002"]);
    let p = Project::reference_on(&aws);
    p.run(&["apply", "--auto-approve"]).success();
    aws.reset_calls();
    p.run(&["drift"]).code(0).stdout_has("No drift");
    assert_eq!(aws.calls()["mutating"], 0, "{}", aws.calls());

    let planted = tamper(&aws, &p);
    let s = |k: &str| planted[k].as_str().unwrap().to_string();
    aws.reset_calls();
    let run = p.run(&["drift", "--json"]);
    run.code(2);
    let calls = aws.calls();
    assert_eq!(
        calls["mutating"], 0,
        "drift must not change anything: {calls}"
    );
    let doc = run.json();
    assert_eq!(doc["result"], "drift");

    let mut extras = of_kind(&doc, "extra");
    extras.sort();
    let mut want = vec![
        ("aws.eks_cluster.main", "someone-else", "fargate_profiles"),
        (
            "aws.iam_role.jenkins_agent",
            "arn:aws:iam::aws:policy/ReadOnlyAccess",
            "attached_policies",
        ),
        ("aws.iam_role.jenkins_agent", "sneaky", "inline_policies"),
        ("aws.route_table.public", "10.50.0.0/16", "routes"),
    ];
    let rule = s("rule");
    let intruder = s("intruder");
    want.push(("aws.security_group.jenkins_master", rule.as_str(), "rules"));
    want.push(("aws.eks_cluster.main", intruder.as_str(), "access_entries"));
    want.sort();
    assert_eq!(extras, want, "{doc:#}");

    let mut unmanaged: Vec<&str> = of_kind(&doc, "unmanaged").iter().map(|f| f.0).collect();
    unmanaged.sort();
    let stray_instance = format!("aws.instance.{}", s("stray"));
    let mut want = vec![
        "aws.ecr_repository.stray",
        "aws.iam_instance_profile.stray",
        "aws.iam_openid_connect_provider.stray",
        "aws.iam_policy.stray",
        "aws.iam_role.stray",
        "aws.load_balancer.smallcase-stray",
        stray_instance.as_str(),
    ];
    want.sort();
    assert_eq!(unmanaged, want, "{doc:#}");

    // Both instances claiming the master's address are reported.
    let dup = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "duplicate")
        .unwrap();
    assert_eq!(dup["address"], "aws.instance.jenkins_master");
    assert_eq!(dup["ids"], json!([s("master"), s("copy")]));
    assert_eq!(doc["counts"]["by_kind"]["duplicate"], 1);
    assert_eq!(doc["counts"]["by_kind"]["extra"], 6);
    assert_eq!(doc["counts"]["by_kind"]["unmanaged"], 7);
    assert_eq!(doc["counts"]["errors"], 0);

    // The text report says the same for people.
    let text = p.run(&["drift"]);
    text.code(2)
        .stdout_has("+ aws.security_group.jenkins_master has a member in `rules` the stack does not declare")
        .stdout_has("! aws.instance.jenkins_master is claimed by 2 objects")
        .stdout_has("aws.iam_role.stray exists (`smallcase-stray`)");
    assert!(
        !text.stdout.contains('\u{1b}'),
        "no colour without a terminal"
    );

    // Accepted drift: ignored and counted, the rest still drift.
    let run = p.run(&[
        "drift",
        "--json",
        "--ignore",
        "aws.eks_cluster.main:access_entries",
        "--ignore",
        "aws.*.stray",
    ]);
    run.code(2);
    let doc = run.json();
    assert_eq!(doc["counts"]["ignored"], 6, "{doc:#}");
    assert_eq!(doc["counts"]["by_kind"]["extra"], 5);

    // Drift never touches the planted objects, and neither does a plan:
    // it puts back nothing that is not the stack's.
    let plan = p.run(&["plan", "--json"]);
    plan.success();
    let changed: Vec<String> = plan.json()["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] != "no-op")
        .map(|c| c["address"].as_str().unwrap().to_string())
        .collect();
    assert!(changed.is_empty(), "{changed:?}");
}

#[test]
fn an_object_that_cannot_be_checked_makes_drift_an_error_naming_it() {
    let aws = LocalAws::start(&["--time-scale", "0.002"]);
    let p = Project::reference_on(&aws);
    p.run(&["apply", "--auto-approve"]).success();
    rt().block_on(async {
        aws.iam()
            .await
            .create_role()
            .role_name("someone-elses")
            .assume_role_policy_document(
                json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
    });
    // Every ListRoleTags and DescribeTargetGroups fails, retries too: IAM
    // and ELBv2 cannot be checked, and both are named.
    aws.configure(json!({"faults": {"rate": 1.0, "kinds": ["500"],
        "operations": ["ListRoleTags", "DescribeTargetGroups"]}}));
    let run = p.run(&["drift", "--json"]);
    run.code(1)
        .stderr_has("ListRoleTags")
        .stderr_has("DescribeTargetGroups");
    let doc = run.json();
    assert_eq!(doc["result"], "error");
    let message = doc["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("ListRoleTags") && message.contains("DescribeTargetGroups"),
        "{doc}"
    );
}

#[test]
fn a_load_balancer_deleted_while_drift_reads_it_is_gone_not_an_error() {
    let aws = LocalAws::start(&["--time-scale", "0.002"]);
    let p = Project::reference_on(&aws);
    p.run(&["apply", "--auto-approve"]).success();
    let subnets = [
        id_of(&p, "aws.subnet.private_a"),
        id_of(&p, "aws.subnet.private_b"),
    ];
    let elbv2 = rt().block_on(aws.elbv2());
    let lb = rt().block_on(async {
        elbv2
            .create_load_balancer()
            .name("smallcase-brief")
            .set_subnets(Some(subnets.to_vec()))
            .send()
            .await
            .unwrap()
            .load_balancers()[0]
            .load_balancer_arn()
            .unwrap()
            .to_string()
    });
    // Slow calls: the load balancer goes between the listing and the tag
    // read, which ELBv2 then refuses as a whole (LoadBalancerNotFound).
    aws.configure(json!({"latency_ms": 1000}));
    aws.reset_calls();
    let args = ["drift", "--json"];
    let child = common::spawn(&p, &args);
    let started = std::time::Instant::now();
    while aws.calls_of("DescribeTargetGroups") == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "drift lists target groups"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    rt().block_on(async {
        elbv2
            .delete_load_balancer()
            .load_balancer_arn(&lb)
            .send()
            .await
            .unwrap();
    });
    let run = common::finished(&p, &args, child);
    aws.configure(json!({"latency_ms": 0}));
    run.code(0);
    let doc = run.json();
    assert_eq!(doc["errors"], json!([]), "{doc:#}");
}

#[test]
fn a_certificate_due_for_renewal_is_a_planned_update_never_drift() {
    let aws = LocalAws::start(&["--time-scale", "0.002"]);
    // The real certificate provider (the simulated cloud stands only for
    // the Kubernetes objects).
    let p = Project::reference_on(&aws);
    p.run(&["apply", "--auto-approve"]).success();
    let cert = "tls.certificate.lb_webhook";
    // Issued long ago: it expires tomorrow, inside the renewal window.
    let path = p.state_path();
    let mut st: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let tomorrow = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    st["resources"][cert]["attributes"]["not_after"] = json!(
        tomorrow
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    std::fs::write(&path, serde_json::to_string_pretty(&st).unwrap()).unwrap();

    p.run(&["drift"]).code(0).stdout_has("No drift");
    let doc = p.run(&["drift", "--json"]).json();
    assert_eq!(doc["result"], "clean", "{doc}");
    p.run(&["plan", "--detailed-exitcode"])
        .code(2)
        .stdout_has(&format!("~ {cert}"))
        .stdout_has("renewal_due");
    p.run(&["apply", "--auto-approve"]).success();
    p.run(&["plan", "--detailed-exitcode"]).code(0);
}
