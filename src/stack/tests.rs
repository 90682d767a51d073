use std::collections::BTreeSet;
use std::path::Path;

use super::*;
use crate::resource::Expr;
use crate::resource::kind::spec_opt;

const BASE: &str = r#"[stack]
name = "s"
region = "ap-south-1"

[jenkins]
master = { allowed_cidrs = ["203.0.113.0/24"] }
repository_url = "https://example.com/app.git"

[registry]
repository = "s/app"

[cluster]
name = "s"
version = "1.31"

[ingress]
controller_version = "2.8.2"

[environments.blue]
branch = "master"
namespace = "s-blue"
overlay = "k8s/overlays/blue"
"#;

const GREEN: &str = r#"
[environments.green]
branch = "staging"
namespace = "s-green"
overlay = "k8s/overlays/green"
"#;

/// A project directory with `stacks/` and overlays for blue, green and develop.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("stacks")).unwrap();
    for env in ["blue", "green", "develop"] {
        let overlay = dir.path().join("k8s/overlays").join(env);
        std::fs::create_dir_all(&overlay).unwrap();
        std::fs::write(overlay.join("kustomization.yaml"), "resources: []\n").unwrap();
    }
    dir
}

fn parse_in(dir: &Path, source: &str) -> Result<Stack, StackError> {
    Stack::parse(&dir.join("stacks/t.toml"), source)
}

/// The diagnostics for `source`, with the temp dir cut from paths.
fn errors(source: &str) -> String {
    let dir = project();
    let err = parse_in(dir.path(), source).expect_err("the stack should be rejected");
    let prefix = format!("{}/", dir.path().display());
    err.to_string().replace(&prefix, "")
}

/// `line:column` of the first occurrence of `needle` in `source`.
fn pos(source: &str, needle: &str) -> String {
    let offset = source.find(needle).expect("needle in source");
    let (l, c) = diag::line_column(source, offset);
    format!("{l}:{c}")
}

fn assert_reports(source: &str, needle: &str, message: &str) {
    let out = errors(source);
    let want = format!("stacks/t.toml:{}: {message}", pos(source, needle));
    assert!(out.contains(&want), "want `{want}` in:\n{out}");
}

fn reference() -> Stack {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks/smallcase.toml");
    Stack::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn reference_stack_parses() {
    let s = reference();
    assert_eq!(s.name(), "smallcase");
    assert_eq!(s.region(), "ap-south-1");
    assert_eq!(s.source_sha256().len(), 64);
    let envs: Vec<_> = s
        .environments()
        .iter()
        .map(|e| (e.name(), e.branch(), e.namespace(), e.protected()))
        .collect();
    assert_eq!(
        envs,
        [
            ("blue", "master", "smallcase-blue", true),
            ("green", "staging", "smallcase-green", false),
            ("develop", "develop", "smallcase-develop", false),
        ]
    );
    let blue = s.environment_opt("blue").unwrap();
    assert!(blue.overlay().ends_with("k8s/overlays/blue"));
    assert!(blue.overlay().join("kustomization.yaml").is_file());
    assert!(s.environment_opt("prod").is_none());
    let net = s.network();
    let cidrs: Vec<String> = net
        .public_subnets()
        .iter()
        .chain(net.private_subnets())
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        cidrs,
        [
            "10.0.0.0/20",
            "10.0.16.0/20",
            "10.0.32.0/20",
            "10.0.48.0/20"
        ]
    );
}

#[test]
fn minimal_stack_takes_defaults() {
    let dir = project();
    let s = parse_in(dir.path(), BASE).unwrap();
    assert_eq!(s.network().azs(), 2);
    assert_eq!(s.network().nat(), Nat::Single);
    assert_eq!(s.network().cidr().to_string(), "10.0.0.0/16");
    assert_eq!(s.jenkins.master_instance_type, "t3.medium");
    assert_eq!(s.jenkins.agent_count, 1);
    assert_eq!(s.registry.tag_mutability, TagMutability::Immutable);
    assert_eq!(s.cluster.logging, ["api", "audit", "authenticator"]);
    assert_eq!(
        s.environments()[0].overlay(),
        dir.path().join("k8s/overlays/blue")
    );
}

#[test]
fn overlay_resolves_next_to_a_stack_outside_stacks() {
    let dir = project();
    let s = Stack::parse(&dir.path().join("t.toml"), BASE).unwrap();
    assert_eq!(
        s.environments()[0].overlay(),
        dir.path().join("k8s/overlays/blue")
    );
}

#[test]
fn syntax_error_has_its_position() {
    let src = BASE.replace("name = \"s\"\nregion", "name = s\nregion");
    let out = errors(&src);
    assert!(out.starts_with("stacks/t.toml:2:8: invalid TOML"), "{out}");
    assert!(out.contains("hint: "), "{out}");
}

#[test]
fn unknown_keys_are_named_with_their_position_and_the_allowed_keys() {
    let src = BASE.replace("region = ", "regoin = \"x\"\nregion = ")
        + "\n[network]\ncidr = \"10.0.0.0/16\"\nsubnets = 3\n";
    let out = errors(&src);
    assert!(
        out.contains(&format!(
            "stacks/t.toml:{}: unknown key `regoin` in `[stack]`\n  hint: did you mean `region`? allowed keys: `name`, `region`, `tags`",
            pos(&src, "regoin")
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "stacks/t.toml:{}: unknown key `subnets` in `[network]`",
            pos(&src, "subnets")
        )),
        "{out}"
    );
    assert_reports(
        &BASE.replace("master = { ", "master = { size = 1, "),
        "size",
        "unknown key `size` in `[jenkins.master]`",
    );
    assert_reports(
        &(BASE.to_string() + "[extra]\n"),
        "extra",
        "unknown table `extra`",
    );
}

#[test]
fn missing_keys_name_their_table() {
    let src = BASE.replace("repository_url = \"https://example.com/app.git\"\n", "");
    assert_reports(
        &src,
        "[jenkins]",
        "`[jenkins]` is missing required key `repository_url`",
    );
    let src = BASE.replace(
        "master = { allowed_cidrs = [\"203.0.113.0/24\"] }",
        "master = { }",
    );
    assert_reports(
        &src,
        "{ }",
        "`[jenkins.master]` is missing required key `allowed_cidrs`",
    );
    let src = BASE.replace("[ingress]\ncontroller_version = \"2.8.2\"\n", "");
    let out = errors(&src);
    assert!(
        out.contains("stacks/t.toml:1:1: missing table `[ingress]`"),
        "{out}"
    );
}

#[test]
fn type_errors_point_at_the_value() {
    let src = BASE.to_string() + "[network]\nazs = \"two\"\n";
    let out = errors(&src);
    assert!(
        out.contains(&format!("stacks/t.toml:{}: ", pos(&src, "\"two\""))),
        "{out}"
    );
    let src = BASE.to_string() + "[network]\nnat = \"double\"\n";
    assert_reports(&src, "\"double\"", "unsupported value `double`");
}

#[test]
fn all_problems_are_reported_at_once() {
    let src = BASE
        .replace("region = \"ap-south-1\"", "region = \"india\"")
        .replace("version = \"1.31\"", "version = \"1.24\"")
        .replace("repository = \"s/app\"", "repository = \"S/App\"")
        + "[network]\ncidr = \"10.0.0.0/8\"\n";
    let out = errors(&src);
    assert_eq!(out.matches("stacks/t.toml:").count(), 4, "{out}");
    insta::assert_snapshot!(out);
}

#[test]
fn duplicate_namespace_names_both_environments_at_the_second() {
    let src = BASE.to_string() + &GREEN.replace("s-green", "s-blue");
    let second = src.rfind("\"s-blue\"").unwrap();
    let (l, c) = diag::line_column(&src, second);
    let out = errors(&src);
    assert_eq!(
        out,
        format!(
            "stacks/t.toml:{l}:{c}: environment `blue` and `green` both use namespace `s-blue`\n  hint: give each environment its own namespace"
        )
    );
}

#[test]
fn duplicate_branch_is_rejected() {
    let src = BASE.to_string() + &GREEN.replace("staging", "master");
    let out = errors(&src);
    assert!(
        out.contains("environment `blue` and `green` both deploy branch `master`"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "stacks/t.toml:{}:",
            pos(&src, "\"master\"\nnamespace = \"s-green\"")
        )),
        "{out}"
    );
}

#[test]
fn environment_names_branches_and_namespaces_are_checked() {
    assert_reports(
        &BASE.replace("namespace = \"s-blue\"", "namespace = \"kube-system\""),
        "\"kube-system\"",
        "namespace `kube-system` belongs to Kubernetes",
    );
    assert_reports(
        &BASE.replace("namespace = \"s-blue\"", "namespace = \"S_Blue\""),
        "\"S_Blue\"",
        "`S_Blue` is not a valid Kubernetes namespace name",
    );
    assert_reports(
        &BASE.replace("branch = \"master\"", "branch = \"feature..x\""),
        "\"feature..x\"",
        "`feature..x` is not a valid git branch name",
    );
    assert_reports(
        &BASE.replace("[environments.blue]", "[environments.Blue]"),
        "Blue",
        "environment name `Blue` is not allowed",
    );
    let none = BASE[..BASE.find("[environments.blue]").unwrap()].to_string() + "[environments]\n";
    assert_reports(
        &none,
        "environments]",
        "`[environments]` has no environment",
    );
}

#[test]
fn overlay_must_exist_and_hold_a_kustomization() {
    assert_reports(
        &BASE.replace("k8s/overlays/blue", "k8s/overlays/prod"),
        "\"k8s/overlays/prod\"",
        "overlay directory `k8s/overlays/prod` does not exist",
    );
    let dir = project();
    std::fs::create_dir_all(dir.path().join("k8s/empty")).unwrap();
    let src = BASE.replace("k8s/overlays/blue", "k8s/empty");
    let out = parse_in(dir.path(), &src).unwrap_err().to_string();
    assert!(out.contains("has no kustomization file"), "{out}");
}

#[test]
fn network_rules() {
    let net = |body: &str| BASE.to_string() + "[network]\n" + body;
    let src = net("cidr = \"10.0.0.0/12\"\n");
    assert_reports(
        &src,
        "\"10.0.0.0/12\"",
        "VPC CIDR `10.0.0.0/12` has prefix /12, AWS allows /16 to /28",
    );
    let src = net("cidr = \"10.0.0.1/16\"\n");
    let out = errors(&src);
    assert!(
        out.contains("has host bits set\n  hint: write the network address: `10.0.0.0/16`"),
        "{out}"
    );
    let src = net("azs = 1\n");
    assert_reports(&src, "1\n", "`azs` `1` is out of range 2..=6");
    let src = net(
        "public_subnets = [\"10.0.0.0/24\", \"10.0.0.128/25\"]\nprivate_subnets = [\"10.0.2.0/24\", \"10.1.0.0/24\"]\n",
    );
    assert_reports(
        &src,
        "\"10.0.0.128/25\"",
        "subnet `10.0.0.128/25` overlaps subnet `10.0.0.0/24`",
    );
    assert_reports(
        &src,
        "\"10.1.0.0/24\"",
        "subnet `10.1.0.0/24` is outside the VPC CIDR `10.0.0.0/16`",
    );
    let src = net("public_subnets = [\"10.0.200.0/24\"]\n");
    assert_reports(
        &src,
        "[\"10.0.200.0/24\"]",
        "`public_subnets` lists 1 subnets but `azs` is 2",
    );
    let src = net("public_subnets = [\"10.0.32.0/24\", \"10.0.33.0/24\"]\n");
    let out = errors(&src);
    assert!(
        out.contains("overlap the default `private_subnets`"),
        "{out}"
    );
    let src = net("cidr = \"10.0.0.0/28\"\n");
    let out = errors(&src);
    assert!(out.contains("too small to carve 4 subnets"), "{out}");
}

#[test]
fn jenkins_rules() {
    let src = BASE.replace("[\"203.0.113.0/24\"]", "[\"203.0.113.7\", \"0.0.0.0/0\"]");
    let out = errors(&src);
    assert!(
        out.contains(&format!(
            "stacks/t.toml:{}: allowed CIDR `203.0.113.7` is not an IPv4 CIDR block\n  hint: write `203.0.113.7/32` for a single address",
            pos(&src, "\"203.0.113.7\"")
        )),
        "{out}"
    );
    assert_eq!(
        out.matches("stacks/t.toml:").count(),
        1,
        "0.0.0.0/0 is allowed:\n{out}"
    );
    assert_reports(
        &BASE.replace("[\"203.0.113.0/24\"]", "[]"),
        "[]",
        "`allowed_cidrs` is empty",
    );
    assert_reports(
        &BASE.replace("master = { ", "master = { instance_type = \"t3-medium\", "),
        "\"t3-medium\"",
        "`t3-medium` is not an EC2 instance type",
    );
    assert_reports(
        &BASE.replace("https://example.com/app.git", "http://example.com/app.git"),
        "\"http://",
        "`http://example.com/app.git` is not a git repository URL slipway can use",
    );
    assert_reports(
        &(BASE.replace("repository_url", "agents = { count = 21 }\nrepository_url")),
        "21",
        "agent `count` `21` is out of range 0..=20",
    );
    assert_reports(
        &(BASE.replace(
            "repository_url",
            "ami_parameter = \"aws/x\"\nrepository_url",
        )),
        "\"aws/x\"",
        "`aws/x` is not an SSM parameter path",
    );
    let dir = project();
    let ok = BASE.replace(
        "https://example.com/app.git",
        "git@github.com:example/app.git",
    );
    assert!(parse_in(dir.path(), &ok).is_ok());
}

#[test]
fn stack_registry_cluster_and_ingress_rules() {
    assert_reports(
        &BASE.replace("name = \"s\"\nregion", "name = \"Small\"\nregion"),
        "\"Small\"",
        "stack name `Small` is not usable in AWS resource names",
    );
    assert_reports(
        &BASE.replace("ap-south-1", "mars-1"),
        "\"mars-1\"",
        "`mars-1` is not an AWS region name",
    );
    assert_reports(
        &BASE.replace(
            "region = \"ap-south-1\"",
            "region = \"ap-south-1\"\ntags = { \"aws:owner\" = \"x\" }",
        ),
        "\"aws:owner\"",
        "tag key `aws:owner` uses the `aws:` prefix, which AWS reserves",
    );
    assert_reports(
        &BASE.replace("\"s/app\"", "\"s//app\""),
        "\"s//app\"",
        "`s//app` is not a valid ECR repository name",
    );
    assert_reports(
        &BASE.replace(
            "repository = \"s/app\"",
            "repository = \"s/app\"\nkeep_images = 0",
        ),
        "0\n",
        "`keep_images` `0` is out of range 1..=1000",
    );
    assert_reports(
        &BASE.replace("name = \"s\"\nversion", "name = \"-s\"\nversion"),
        "\"-s\"",
        "`-s` is not a valid EKS cluster name",
    );
    let out = errors(&BASE.replace("\"1.31\"", "\"1.27\""));
    assert!(
        out.contains("EKS no longer offers Kubernetes `1.27`\n  hint: use `1.28` or later"),
        "{out}"
    );
    assert_reports(
        &BASE.replace("\"1.31\"", "\"1.x\""),
        "\"1.x\"",
        "`1.x` is not a Kubernetes version",
    );
    assert_reports(
        &BASE.replace(
            "version = \"1.31\"",
            "version = \"1.31\"\nlogging = [\"api\", \"kubelet\"]",
        ),
        "\"kubelet\"",
        "`kubelet` is not an EKS control plane log type",
    );
    let out = errors(&BASE.replace("\"2.8.2\"", "\"2.7.0\""));
    assert!(
        out.contains("AWS Load Balancer Controller version `2.7.0` is not supported\n  hint: use one of `2.8.2`"),
        "{out}"
    );
}

#[test]
fn load_reports_a_missing_file() {
    let err = Stack::load(Path::new("/nonexistent/stacks/x.toml")).unwrap_err();
    assert_eq!(err.diagnostics().len(), 1);
    assert!(
        err.to_string()
            .starts_with("/nonexistent/stacks/x.toml:1:1: cannot read the stack file")
    );
}

// ---- the desired graph ----

fn addresses(d: &crate::resource::Desired) -> Vec<String> {
    d.resources().keys().map(ToString::to_string).collect()
}

#[test]
fn reference_graph_is_valid_and_complete() {
    let d = reference().desired().unwrap_or_else(|e| panic!("{e}"));
    insta::assert_snapshot!(addresses(&d).join("\n"));
}

#[test]
fn every_taggable_aws_resource_is_tagged() {
    let s = reference();
    let d = s.desired().unwrap();
    let untaggable: BTreeSet<&str> = [
        "route",
        "route_table_association",
        "security_group_rule",
        "iam_role_policy_attachment",
        "iam_role_policy",
        "ecr_lifecycle_policy",
        "volume_attachment",
        "eip_association",
    ]
    .into();
    for (addr, r) in d.resources() {
        if addr.domain() != crate::addr::Domain::Aws || untaggable.contains(addr.kind()) {
            continue;
        }
        let tags = r
            .attrs()
            .get("tags")
            .and_then(Expr::known)
            .unwrap_or_else(|| panic!("{addr} has no literal tags"));
        assert_eq!(tags["slipway:stack"], "smallcase", "{addr}");
        assert_eq!(tags["slipway:address"], addr.to_string(), "{addr}");
        assert!(
            tags["Name"].as_str().is_some_and(|n| !n.is_empty()),
            "{addr}"
        );
    }
}

#[test]
fn stack_tags_reach_every_tagged_resource() {
    let dir = project();
    let src = BASE.replace(
        "region = \"ap-south-1\"",
        "region = \"ap-south-1\"\ntags = { team = \"platform\" }",
    );
    let d = parse_in(dir.path(), &src).unwrap().desired().unwrap();
    let tagged: Vec<_> = d
        .resources()
        .values()
        .filter_map(|r| r.attrs().get("tags"))
        .collect();
    assert!(tagged.len() > 15);
    for t in tagged {
        assert_eq!(t.known().unwrap()["team"], "platform");
    }
}

#[test]
fn fargate_profiles_are_serialised_and_env_resources_carry_their_env() {
    let d = reference().desired().unwrap();
    let profiles: Vec<_> = d
        .resources()
        .values()
        .filter(|r| r.addr().kind() == "eks_fargate_profile")
        .collect();
    assert_eq!(profiles.len(), 4);
    for p in &profiles {
        assert_eq!(p.serial_group_opt(), Some("eks-fargate-profiles:smallcase"));
    }
    let env_of = |a: &str| {
        d.get_opt(&a.parse().unwrap())
            .unwrap_or_else(|| panic!("{a} missing"))
            .env_opt()
            .map(str::to_string)
    };
    for (env, ns) in [("blue", "smallcase-blue"), ("develop", "smallcase-develop")] {
        assert_eq!(
            env_of(&format!("aws.eks_fargate_profile.{env}")).as_deref(),
            Some(env)
        );
        assert_eq!(env_of(&format!("k8s.namespace.{ns}")).as_deref(), Some(env));
        assert_eq!(
            env_of(&format!("k8s.role.{ns}/slipway-deployer")).as_deref(),
            Some(env)
        );
        assert_eq!(
            env_of(&format!("k8s.role_binding.{ns}/slipway-deployer")).as_deref(),
            Some(env)
        );
    }
    assert_eq!(env_of("aws.eks_fargate_profile.kube_system"), None);
    assert_eq!(env_of("aws.vpc.main"), None);
}

#[test]
fn every_kubernetes_object_waits_for_the_cluster_and_kube_system_profile() {
    let d = reference().desired().unwrap();
    let cluster: crate::addr::Address = "aws.eks_cluster.main".parse().unwrap();
    let profile: crate::addr::Address = "aws.eks_fargate_profile.kube_system".parse().unwrap();
    let ns: crate::addr::Address = "k8s.namespace.smallcase-green".parse().unwrap();
    for (addr, r) in d.resources() {
        if addr.domain() != crate::addr::Domain::K8s {
            continue;
        }
        let deps = r.dependencies();
        assert!(deps.contains(&cluster) && deps.contains(&profile), "{addr}");
        let m = r.attrs()["manifest"].substitute(&|_| None);
        let (Expr::Map(_) | Expr::Lit(_)) = m else {
            panic!("{addr}: manifest is not an object");
        };
        if addr.name().starts_with("smallcase-green/") {
            assert!(deps.contains(&ns), "{addr}");
        }
    }
}

#[test]
fn nat_per_az_doubles_nat_gateways_and_eips() {
    let dir = project();
    // NAT addresses only (the Jenkins master has one of its own).
    let count = |d: &crate::resource::Desired, kind: &str| {
        d.resources()
            .keys()
            .filter(|a| a.kind() == kind && a.name().starts_with("nat_"))
            .count()
    };
    let single = parse_in(dir.path(), BASE).unwrap().desired().unwrap();
    let per_az = parse_in(
        dir.path(),
        &(BASE.to_string() + "[network]\nnat = \"per_az\"\n"),
    )
    .unwrap()
    .desired()
    .unwrap();
    assert_eq!(
        (count(&single, "nat_gateway"), count(&single, "eip")),
        (1, 1)
    );
    assert_eq!(
        (count(&per_az, "nat_gateway"), count(&per_az, "eip")),
        (2, 2)
    );
    // Each private route goes to its own AZ's NAT gateway.
    let route = &per_az.resources()[&"aws.route.private_b_nat".parse().unwrap()];
    let target = &route.attrs()["nat_gateway_id"].references()[0].addr;
    assert_eq!(target.to_string(), "aws.nat_gateway.nat_b");
}

#[test]
fn agent_count_sets_the_agents() {
    let dir = project();
    let agents = |count: u32| {
        let src = BASE.replace(
            "repository_url",
            &format!("agents = {{ count = {count} }}\nrepository_url"),
        );
        let d = parse_in(dir.path(), &src).unwrap().desired().unwrap();
        d.resources()
            .keys()
            .filter(|a| a.kind() == "instance" && a.name().starts_with("jenkins_agent_"))
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert!(agents(0).is_empty());
    assert_eq!(agents(3).len(), 3);
    // Round-robin over the private subnets.
    let src = BASE.replace("repository_url", "agents = { count = 3 }\nrepository_url");
    let d = parse_in(dir.path(), &src).unwrap().desired().unwrap();
    let subnet = |n: u32| {
        let r = &d.resources()[&format!("aws.instance.jenkins_agent_{n}").parse().unwrap()];
        r.attrs()["subnet_id"].references()[0].addr.to_string()
    };
    assert_eq!(subnet(1), "aws.subnet.private_a");
    assert_eq!(subnet(2), "aws.subnet.private_b");
    assert_eq!(subnet(3), "aws.subnet.private_a");
}

#[test]
fn security_groups_open_only_what_the_stack_says() {
    let d = reference().desired().unwrap();
    for (addr, r) in d.resources() {
        if addr.kind() != "security_group_rule" {
            continue;
        }
        if let Some(cidrs) = r.attrs().get("cidr_blocks") {
            assert_eq!(
                cidrs.known().unwrap(),
                serde_json::json!(["203.0.113.0/24"]),
                "{addr}"
            );
        } else {
            assert!(r.attrs().contains_key("source_security_group_id"), "{addr}");
        }
    }
}

#[test]
fn irsa_trust_is_keyed_by_the_issuer_host() {
    let d = reference().desired().unwrap();
    let role = &d.resources()[&"aws.iam_role.lb_controller".parse().unwrap()];
    let trust = role.attrs()["assume_role_policy"]
        .resolve(&|r| match r.attr.as_str() {
            "issuer_host" => Some(serde_json::json!(
                "oidc.eks.ap-south-1.amazonaws.com/id/ABC"
            )),
            "arn" => Some(serde_json::json!("arn:aws:iam::1:oidc-provider/x")),
            _ => None,
        })
        .unwrap();
    let cond = &trust["Statement"][0]["Condition"]["StringEquals"];
    assert_eq!(
        cond["oidc.eks.ap-south-1.amazonaws.com/id/ABC:sub"],
        "system:serviceaccount:kube-system:aws-load-balancer-controller"
    );
    assert_eq!(
        cond["oidc.eks.ap-south-1.amazonaws.com/id/ABC:aud"],
        "sts.amazonaws.com"
    );
}

#[test]
fn lb_controller_release_data_is_well_formed() {
    for r in lbc::RELEASES {
        assert!(
            r.image.ends_with(&format!(":v{}", r.version)),
            "{}",
            r.version
        );
        assert!(r.iam_policy_source.contains(&format!("/v{}/", r.version)));
        if let Some(doc) = r.iam_policy {
            let v: serde_json::Value = serde_json::from_str(doc).unwrap();
            assert_eq!(v["Version"], "2012-10-17");
        }
        let m = r.manifests;
        assert!(m.chart.starts_with("aws-load-balancer-controller-"));
        for crd in (m.crds)() {
            let versions = crd.versions.as_array().unwrap();
            let storage = versions.iter().filter(|v| v["storage"] == true).count();
            assert_eq!(storage, 1, "{}: one storage version", crd.plural);
            assert!(matches!(crd.scope, "Cluster" | "Namespaced"));
        }
        // The webhook Service targets the container port by name.
        let container = (m.container)();
        assert!(
            container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "webhook-server"),
            "{container}"
        );
        let hooks: Vec<_> = (m.mutating_webhooks)()
            .into_iter()
            .chain((m.validating_webhooks)())
            .collect();
        let mut names: Vec<_> = hooks.iter().map(|h| h.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), hooks.len(), "webhook names are unique");
        for h in &hooks {
            assert!(
                h.path.starts_with('/') && h.rest["rules"].is_array(),
                "{}",
                h.name
            );
        }
        for rules in [(m.cluster_role_rules)(), (m.leader_election_rules)()] {
            assert!(rules.as_array().is_some_and(|r| !r.is_empty()));
        }
    }
    assert!(
        spec_opt("aws.iam_openid_connect_provider")
            .unwrap()
            .outputs
            .contains(&"issuer_host")
    );
}

#[test]
fn schema_errors_read_well() {
    let src = BASE
        .replace("region = ", "regoin = \"x\"\nregion = ")
        .replace(
            "master = { allowed_cidrs = [\"203.0.113.0/24\"] }",
            "master = { }",
        )
        + "[network]\nazs = \"two\"\nnat = \"double\"\n";
    insta::assert_snapshot!(errors(&src));
    let syntax = BASE.replace("name = \"s\"\nregion", "name = s\nregion");
    insta::assert_snapshot!("syntax_error", errors(&syntax));
}

#[test]
fn cluster_admins_get_admin_access_entries_and_bad_arns_are_explained() {
    let with_admins = |list: &str| {
        BASE.replace(
            "version = \"1.31\"",
            &format!("version = \"1.31\"\nadmins = [{list}]"),
        )
    };
    let dir = project();
    let src = with_admins(
        "\"arn:aws:iam::123456789012:role/ci\", \"arn:aws:iam::123456789012:user/ops/alice\"",
    );
    let d = parse_in(dir.path(), &src).unwrap().desired().unwrap();
    let ci = d
        .get_opt(
            &"aws.eks_access_entry.admin-role-123456789012-ci"
                .parse()
                .unwrap(),
        )
        .unwrap_or_else(|| panic!("no entry for the ci role"));
    assert_eq!(
        ci.attrs()["principal_arn"].known(),
        Some(serde_json::json!("arn:aws:iam::123456789012:role/ci"))
    );
    assert_eq!(
        ci.attrs()["access_policies"].known().unwrap()[0]["policy_arn"],
        "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
    );
    assert!(
        d.get_opt(
            &"aws.eks_access_entry.admin-user-123456789012-alice"
                .parse()
                .unwrap()
        )
        .is_some()
    );
    // Jenkins gets no access policy at all.
    let jenkins = d
        .get_opt(&"aws.eks_access_entry.jenkins_agent".parse().unwrap())
        .unwrap();
    assert_eq!(
        jenkins.attrs()["access_policies"].known(),
        Some(serde_json::json!([]))
    );

    let out = errors(&with_admins(
        "\"arn:aws:sts::123456789012:assumed-role/ci/session-1\"",
    ));
    assert!(
        out.contains("is an assumed-role session, not an IAM principal")
            && out.contains("hint: use the role's ARN: `arn:aws:iam::123456789012:role/ci`"),
        "{out}"
    );
    assert_reports(
        &with_admins("\"ci\""),
        "\"ci\"",
        "`ci` is not an IAM role or user ARN",
    );
    assert_reports(
        &with_admins("\"arn:aws-cn:iam::123456789012:role/ci\""),
        "\"arn:aws-cn",
        "`arn:aws-cn:iam::123456789012:role/ci` is in partition `aws-cn`, the stack's region is in `aws`",
    );
    assert_reports(
        &with_admins("\"arn:aws:iam::123456789012:role/s-jenkins-agent\""),
        "\"arn:aws:iam::123456789012:role/s-jenkins-agent\"",
        "`arn:aws:iam::123456789012:role/s-jenkins-agent` is one of the stack's Jenkins roles",
    );
    assert_reports(
        &with_admins("\"arn:aws:iam::123456789012:role/s-drift\""),
        "\"arn:aws:iam::123456789012:role/s-drift\"",
        "`arn:aws:iam::123456789012:role/s-drift` is the stack's drift role",
    );
    let twice = "\"arn:aws:iam::123456789012:role/ci\"";
    let out = errors(&with_admins(&format!("{twice}, {twice}")));
    assert!(out.contains("is listed twice"), "{out}");
}

/// A reference's value as the cloud would give it: ARNs and names from the
/// address's name.
fn fake_output(r: &crate::resource::Reference) -> Option<serde_json::Value> {
    let name = format!("smallcase-{}", r.addr.name().replace('_', "-"));
    Some(serde_json::json!(match r.attr.as_str() {
        "arn" => format!("arn:aws:iam::123456789012:role/{name}"),
        _ => name,
    }))
}

#[test]
fn drift_role_may_only_read() {
    let d = reference().desired().unwrap();
    let policy = &d.resources()[&"aws.iam_role_policy.drift_read".parse().unwrap()];
    assert_eq!(
        policy.within_opt().map(ToString::to_string).as_deref(),
        Some("aws.iam_role.drift")
    );
    let doc = policy.attrs()["policy"].known().expect("a literal policy");
    let statements = doc["Statement"].as_array().unwrap();
    let mut actions = Vec::new();
    for st in statements {
        assert_eq!(st["Effect"], "Allow", "{st}");
        assert!(
            st.get("NotAction").is_none() && st.get("NotResource").is_none(),
            "{st}"
        );
        assert_eq!(st["Resource"], "*", "{st}");
        for a in st["Action"].as_array().unwrap() {
            actions.push(a.as_str().unwrap().to_string());
        }
    }
    actions.sort();
    // The documented list (docs/drift.md), exactly.
    let mut documented = vec![
        "ec2:Describe*",
        "iam:Get*",
        "iam:List*",
        "ecr:DescribeRepositories",
        "ecr:ListTagsForResource",
        "ecr:GetLifecyclePolicy",
        "eks:Describe*",
        "eks:List*",
        "elasticloadbalancing:Describe*",
        "sts:GetCallerIdentity",
    ];
    documented.sort_unstable();
    assert_eq!(actions, documented);
    for action in &actions {
        let verb = action.split_once(':').map_or("", |(_, verb)| verb);
        assert!(
            ["Describe", "Get", "List"]
                .iter()
                .any(|read| verb.starts_with(read))
                || action == "sts:GetCallerIdentity",
            "`{action}` is not a read action"
        );
    }
}

/// The resolved `policy` of an inline role policy, by address.
fn inline_policy(d: &crate::resource::Desired, addr: &str) -> serde_json::Value {
    d.resources()[&addr.parse().unwrap()].attrs()["policy"]
        .resolve(&fake_output)
        .unwrap()
}

/// Every statement of a policy as (Sid, Action, Resource, Condition).
fn statements(policy: &serde_json::Value) -> Vec<serde_json::Value> {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| {
            assert_eq!(st["Effect"], "Allow", "{st}");
            assert!(st.get("NotAction").is_none() && st.get("NotResource").is_none());
            serde_json::json!([st["Sid"], st["Action"], st["Resource"], st.get("Condition")])
        })
        .collect()
}

const REPO_ARN: &str = "arn:aws:iam::123456789012:role/smallcase-app";
const CLUSTER_ARN: &str = "arn:aws:iam::123456789012:role/smallcase-main";

/// What docs/jenkins.md lists for builds and production deploys.
fn deploy_statements() -> Vec<serde_json::Value> {
    use serde_json::json;
    let p = "arn:aws:ssm:ap-south-1:*:parameter/slipway/smallcase/jenkins";
    vec![
        json!(["EcrLogin", "ecr:GetAuthorizationToken", "*", null]),
        json!([
            "EcrPushPullThisRepository",
            [
                "ecr:BatchCheckLayerAvailability",
                "ecr:BatchGetImage",
                "ecr:CompleteLayerUpload",
                "ecr:DescribeImages",
                "ecr:DescribeRepositories",
                "ecr:GetDownloadUrlForLayer",
                "ecr:InitiateLayerUpload",
                "ecr:ListImages",
                "ecr:PutImage",
                "ecr:UploadLayerPart"
            ],
            REPO_ARN,
            null
        ]),
        json!([
            "ReadAgentKey",
            "ssm:GetParameter",
            format!("{p}/agent-ssh-public-key"),
            null
        ]),
        json!([
            "DescribeThisCluster",
            "eks:DescribeCluster",
            CLUSTER_ARN,
            null
        ]),
        json!([
            "ReadTargetHealth",
            "elasticloadbalancing:DescribeTargetHealth",
            "*",
            null
        ]),
    ]
}

#[test]
fn jenkins_roles_grant_exactly_the_documented_actions_on_the_documented_resources() {
    use serde_json::json;
    let d = reference().desired().unwrap();
    let p = "arn:aws:ssm:ap-south-1:*:parameter/slipway/smallcase/jenkins";
    let drift_arn = "arn:aws:iam::123456789012:role/smallcase-drift";
    let assume_drift = json!(["AssumeDriftRole", "sts:AssumeRole", drift_arn, null]);

    // The master: its own parameters, and finding agents. No ECR, no EKS,
    // no role to assume.
    assert_eq!(
        statements(&inline_policy(&d, "aws.iam_role_policy.jenkins_master")),
        vec![
            json!([
                "OwnParameters",
                ["ssm:GetParameter", "ssm:PutParameter"],
                [
                    format!("{p}/admin-password"),
                    format!("{p}/webhook-token"),
                    format!("{p}/agent-ssh-public-key")
                ],
                null
            ]),
            json!(["FindAgents", "ec2:DescribeInstances", "*", null]),
            json!([
                "ReadAgentHostKeys",
                "ec2:GetConsoleOutput",
                "arn:aws:ec2:ap-south-1:*:instance/*",
                {
                    "StringEquals": {"aws:ResourceTag/slipway:stack": "smallcase"},
                    "StringLike": {"aws:ResourceTag/slipway:jenkins-agent": "*"}
                }
            ]),
        ]
    );
    // Build agents: push and pull, read the master's public key; they may
    // not read the admin password or the webhook token, nor write any
    // parameter, nor assume the drift role (production exists).
    assert_eq!(
        statements(&inline_policy(&d, "aws.iam_role_policy.jenkins_agent")),
        deploy_statements()
    );
    // The production agent: the same, and the drift job's role.
    let mut production = deploy_statements();
    production.push(assume_drift.clone());
    assert_eq!(
        statements(&inline_policy(&d, "aws.iam_role_policy.jenkins_production")),
        production
    );

    // Three roles, three instance profiles, each instance on its own.
    let profile_of = |addr: &str| {
        d.resources()[&addr.parse().unwrap()].attrs()["iam_instance_profile"]
            .resolve(&fake_output)
            .unwrap()
    };
    assert_eq!(
        profile_of("aws.instance.jenkins_master"),
        "smallcase-jenkins-master"
    );
    assert_eq!(
        profile_of("aws.instance.jenkins_agent_1"),
        "smallcase-jenkins-agent"
    );
    assert_eq!(
        profile_of("aws.instance.jenkins_production_agent"),
        "smallcase-jenkins-production"
    );

    // Only the production agent's role may assume the drift role.
    let trust = d.resources()[&"aws.iam_role.drift".parse().unwrap()].attrs()["assume_role_policy"]
        .resolve(&fake_output)
        .unwrap();
    assert_eq!(
        trust["Statement"],
        json!([{
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::123456789012:role/smallcase-jenkins-production"},
            "Action": "sts:AssumeRole",
        }])
    );

    // In Kubernetes: builds deploy where nothing is protected, the
    // production agent deploys to blue; each reads the other's.
    let subjects = |addr: &str| {
        d.resources()[&addr.parse().unwrap()].attrs()["manifest"]
            .known()
            .unwrap()
    };
    for (ns, deployer, reader) in [
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
        let m = subjects(&format!("k8s.role_binding.{ns}/slipway-deployer"));
        assert_eq!(m["subjects"][0]["name"], deployer, "{ns}");
        assert_eq!(m["roleRef"]["name"], "slipway-deployer");
        let m = subjects(&format!("k8s.role_binding.{ns}/slipway-reader"));
        assert_eq!(m["subjects"][0]["name"], reader, "{ns}");
        assert_eq!(
            m["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"})
        );
    }
    let groups = |addr: &str| {
        d.resources()[&addr.parse().unwrap()].attrs()["kubernetes_groups"]
            .known()
            .unwrap()
    };
    assert_eq!(
        groups("aws.eks_access_entry.jenkins_agent"),
        json!(["slipway-deployers"])
    );
    assert_eq!(
        groups("aws.eks_access_entry.jenkins_production"),
        json!(["slipway-production-deployers"])
    );
    assert!(
        d.get_opt(&"aws.eks_access_entry.jenkins_master".parse().unwrap())
            .is_none(),
        "the master has no cluster access"
    );

    // The master's drift job is configured with the role's ARN.
    let master = &d.resources()[&"aws.instance.jenkins_master".parse().unwrap()];
    assert!(
        master
            .dependencies()
            .contains(&"aws.iam_role.drift".parse().unwrap())
    );
    let user_data = master.attrs()["user_data"].resolve(&fake_output).unwrap();
    let user_data = user_data.as_str().unwrap();
    assert!(
        user_data.contains(&format!("role_arn = {drift_arn}")),
        "{user_data}"
    );
    assert!(
        user_data.contains(r"SLIPWAY_STACK = \\'stacks/smallcase.toml\\'"),
        "{user_data}"
    );
}

#[test]
fn without_a_protected_environment_the_build_agents_run_everything() {
    let dir = project();
    let src = BASE.replace(
        "[environments.blue]\n",
        "[environments.blue]\nprotected = false\n",
    );
    let d = parse_in(dir.path(), &src).unwrap().desired().unwrap();
    let addrs = addresses(&d);
    assert!(!addrs.iter().any(|a| a.contains("production")), "{addrs:?}");
    let mut build = deploy_statements();
    build.push(serde_json::json!([
        "AssumeDriftRole",
        "sts:AssumeRole",
        "arn:aws:iam::123456789012:role/s-drift",
        null
    ]));
    let got = statements(&inline_policy(&d, "aws.iam_role_policy.jenkins_agent"));
    let normalize = |v: Vec<serde_json::Value>| {
        serde_json::to_string(&v)
            .unwrap()
            .replace("smallcase", "s")
            .replace("arn:aws:iam::123456789012:role/s-app", "R")
    };
    assert_eq!(normalize(got), normalize(build));
}

#[test]
fn agents_change_without_touching_the_master() {
    let dir = project();
    let master_of = |src: &str| {
        let d = parse_in(dir.path(), src).unwrap().desired().unwrap();
        let m = d.resources()[&"aws.instance.jenkins_master".parse().unwrap()].clone();
        (
            m.attrs().clone(),
            m.dependencies().clone(),
            addresses(&d)
                .into_iter()
                .filter(|a| a.starts_with("aws.instance.jenkins_agent"))
                .count(),
        )
    };
    let (attrs, deps, n) = master_of(BASE);
    assert_eq!(n, 1);
    let more = BASE.replace(
        "repository_url",
        "agents = { count = 3, instance_type = \"m7g.large\", volume_size = 80 }\nrepository_url",
    );
    let (attrs2, deps2, n2) = master_of(&more);
    assert_eq!(n2, 3);
    assert_eq!(
        attrs, attrs2,
        "the master's attributes do not depend on the agents"
    );
    assert_eq!(deps, deps2, "nor do its dependencies");
}

#[test]
fn security_group_rules_open_only_what_the_stack_lists() {
    let dir = project();
    let rules = |src: &str| -> Vec<(String, u64, serde_json::Value)> {
        let d = parse_in(dir.path(), src).unwrap().desired().unwrap();
        d.resources()
            .values()
            .filter(|r| r.addr().kind() == "security_group_rule")
            .map(|r| {
                let a = r.attrs();
                (
                    r.addr().name().to_string(),
                    a["from_port"].known().unwrap().as_u64().unwrap(),
                    a.get("cidr_blocks")
                        .and_then(|c| c.known())
                        .unwrap_or(serde_json::json!("security group")),
                )
            })
            .collect()
    };
    let reference = rules(BASE);
    assert_eq!(
        reference,
        vec![
            (
                "jenkins_agent_ssh".to_string(),
                22,
                serde_json::json!("security group")
            ),
            (
                "jenkins_master_https".to_string(),
                443,
                serde_json::json!(["203.0.113.0/24"])
            ),
        ],
        "no webhook port without webhook_cidrs, no SSH without a key pair, nothing on 8080 or 50000"
    );
    let listed = BASE
        .replace(
            "repository_url",
            "webhook_cidrs = [\"192.30.252.0/22\", \"185.199.108.0/22\"]\nrepository_url",
        )
        .replace(
            "master = { allowed_cidrs = [\"203.0.113.0/24\"] }",
            "master = { allowed_cidrs = [\"203.0.113.0/24\"], key_name = \"ops\" }",
        );
    let mut got = rules(&listed);
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            (
                "jenkins_agent_ssh".to_string(),
                22,
                serde_json::json!("security group")
            ),
            (
                "jenkins_master_https".to_string(),
                443,
                serde_json::json!(["203.0.113.0/24"])
            ),
            (
                "jenkins_master_ssh".to_string(),
                22,
                serde_json::json!(["203.0.113.0/24"])
            ),
            (
                "jenkins_master_webhook".to_string(),
                8443,
                serde_json::json!(["192.30.252.0/22", "185.199.108.0/22"])
            ),
        ]
    );
    // The reference stack opens nothing to the world.
    let d =
        super::Stack::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks/smallcase.toml"))
            .unwrap()
            .desired()
            .unwrap();
    for r in d.resources().values() {
        if let Some(c) = r.attrs().get("cidr_blocks").and_then(|c| c.known()) {
            assert!(!c.to_string().contains("0.0.0.0/0"), "{}: {c}", r.addr());
        }
    }
}

#[test]
fn jenkins_keys_are_checked() {
    let with =
        |jenkins: &str| BASE.replace("repository_url", &format!("{jenkins}\nrepository_url"));
    let out = errors(&with("slipway_url = \"https://example.com/slipway\""));
    assert!(
        out.contains("`slipway_url` has no `slipway_sha256`"),
        "{out}"
    );
    let out = errors(&with(
        "slipway_url = \"https://example.com/slipway\"\nslipway_sha256 = \"abc\"",
    ));
    assert!(out.contains("`abc` is not a SHA-256 digest"), "{out}");
    let out = errors(&with(&format!("slipway_sha256 = \"{}\"", "a".repeat(64))));
    assert!(
        out.contains("`slipway_sha256` without `slipway_url`"),
        "{out}"
    );
    let out = errors(&with("webhook_cidrs = [\"192.30.252.0/33\"]"));
    assert!(out.contains("webhook CIDR"), "{out}");
    let out = errors(&with("scan_interval = \"7m\""));
    assert!(
        out.contains("`7m` is not a scan interval Jenkins offers"),
        "{out}"
    );
    let out = errors(&BASE.replace(
        "allowed_cidrs = [\"203.0.113.0/24\"]",
        "allowed_cidrs = [\"203.0.113.0/24\"], tls_parameter_path = \"org/tls/\"",
    ));
    assert!(
        out.contains("`org/tls/` is not an SSM parameter path"),
        "{out}"
    );
    let out = errors(&BASE.replace("version = \"1.31\"", "version = \"1.34\""));
    assert!(
        out.contains("slipway pins no kubectl for Kubernetes `1.34`"),
        "{out}"
    );
    parse_in(
        project().path(),
        &BASE.replace("version = \"1.31\"", "version = \"1.33\""),
    )
    .expect("kubectl 1.32 serves a 1.33 cluster");
    let dir = project();
    let ok = with(&format!(
        "slipway_url = \"https://example.com/slipway\"\nslipway_sha256 = \"{}\"\nscan_interval = \"2h\"",
        "AB".repeat(32)
    ));
    parse_in(dir.path(), &ok).unwrap();
}

#[test]
fn promotion_chains_name_known_environments_and_do_not_loop() {
    let develop = "\n[environments.develop]\nbranch = \"develop\"\nnamespace = \"s-develop\"\noverlay = \"k8s/overlays/develop\"\n";
    // A good chain parses, with its soak.
    let good = format!(
        "{}promote_from = \"green\"\nmin_soak = \"1h30m\"\n{GREEN}promote_from = \"develop\"\n{develop}",
        BASE
    );
    let dir = project();
    let s = parse_in(dir.path(), &good).unwrap();
    let blue = s.environment_opt("blue").unwrap();
    assert_eq!(blue.promote_from(), Some("green"));
    assert_eq!(blue.min_soak().map(|d| d.as_secs()), Some(5400));
    assert_eq!(s.environment_opt("develop").unwrap().promote_from(), None);

    let unknown = format!("{BASE}promote_from = \"staging\"\n");
    assert!(errors(&unknown).contains(
        "`promote_from` of environment `blue` names `staging`, which is not an environment"
    ));
    let itself = format!("{BASE}promote_from = \"blue\"\n");
    assert!(errors(&itself).contains("cannot promote from itself"));
    let cycle = format!("{BASE}promote_from = \"green\"\n{GREEN}promote_from = \"blue\"\n");
    let e = errors(&cycle);
    assert!(
        e.contains("promotion cycle: `blue` promotes from `green` promotes from `blue`"),
        "{e}"
    );
    assert_eq!(e.matches("promotion cycle").count(), 1, "{e}");
    let soak = format!("{BASE}min_soak = \"30m\"\n");
    assert!(errors(&soak).contains("has `min_soak` but no `promote_from`"));
    let bad = format!("{BASE}promote_from = \"green\"\nmin_soak = \"half an hour\"\n{GREEN}");
    assert!(errors(&bad).contains("is not a duration"));
}

#[test]
fn the_state_table_chooses_the_backend_and_its_keys_are_checked() {
    use crate::stack::StateBackend;
    let dir = project();
    let with = |t: &str| format!("{BASE}\n[state]\n{t}\n");
    let s = parse_in(dir.path(), BASE).unwrap();
    assert_eq!(s.state_backend(), &StateBackend::Local);
    let s = parse_in(
        dir.path(),
        &with("backend = \"s3\"\nbucket = \"acme-state\""),
    )
    .unwrap();
    let StateBackend::S3(at) = s.state_backend() else {
        panic!("an S3 backend")
    };
    assert_eq!(
        (
            at.bucket.as_str(),
            at.key.as_str(),
            at.region.as_str(),
            at.kms_key_id.as_deref()
        ),
        ("acme-state", "s/slipway.state.json", "ap-south-1", None)
    );
    let out = errors(&with("backend = \"s3\""));
    assert!(out.contains("`backend = \"s3\"` needs `bucket`"), "{out}");
    let out = errors(&with("bucket = \"acme-state\""));
    assert!(out.contains("`bucket` is for the S3 backend"), "{out}");
    let out = errors(&with("backend = \"s3\"\nbucket = \"Acme_State\""));
    assert!(
        out.contains("`Acme_State` is not an S3 bucket name"),
        "{out}"
    );
    let out = errors(&with(
        "backend = \"s3\"\nbucket = \"acme-state\"\nkey = \"/x.lock\"",
    ));
    assert!(out.contains("is not a state object key"), "{out}");
    let out = errors(&with("backend = \"gcs\""));
    assert!(out.contains("`gcs` is not a state backend"), "{out}");
    let out = errors(&with("backend = \"s3\"\nbucket = \"acme-state\"\nttl = 3"));
    assert!(out.contains("ttl"), "{out}");
}

#[test]
fn with_the_s3_backend_the_drift_role_may_read_the_state_object_and_only_that() {
    let dir = project();
    let src = format!(
        "{BASE}\n[state]\nbackend = \"s3\"\nbucket = \"acme-state\"\nkey = \"team/s.json\"\nkms_key_id = \"alias/state\"\n"
    );
    let d = parse_in(dir.path(), &src).unwrap().desired().unwrap();
    let policy =
        d.resources()[&"aws.iam_role_policy.drift_read".parse().unwrap()].attrs()["policy"]
            .known()
            .unwrap();
    let statements = policy["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 3);
    assert_eq!(
        statements[1],
        serde_json::json!({
            "Sid": "ReadState", "Effect": "Allow", "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::acme-state/team/s.json",
        })
    );
    assert_eq!(statements[2]["Action"], "kms:Decrypt");
    assert_eq!(
        statements[2]["Condition"],
        serde_json::json!({"StringEquals": {"kms:ViaService": "s3.ap-south-1.amazonaws.com"}})
    );
    // Not the lock, not the bucket, no write.
    assert!(!policy.to_string().contains(".lock"));
    assert!(!policy.to_string().contains("s3:Put"));
}

/// BASE with `count` environments in all (blue and `count - 1` more).
fn with_environments(count: usize, cluster_extra: &str) -> String {
    let mut s = BASE.replace(
        "version = \"1.31\"",
        &format!("version = \"1.31\"{cluster_extra}"),
    );
    for i in 1..count {
        s.push_str(&format!(
            "\n[environments.e{i}]\nbranch = \"e{i}\"\nnamespace = \"s-e{i}\"\noverlay = \"k8s/overlays/develop\"\n"
        ));
    }
    s
}

#[test]
fn more_fargate_profiles_than_the_quota_are_refused_at_the_first_environment_over_it() {
    let dir = project();
    // kube-system and nine environments: exactly EKS's default of 10.
    let fits = with_environments(9, "");
    parse_in(dir.path(), &fits).unwrap_or_else(|e| panic!("{e}"));

    let over = with_environments(10, "");
    let out = errors(&over);
    assert!(
        out.contains(&format!("stacks/t.toml:{}", pos(&over, "e9]"))),
        "{out}"
    );
    assert!(out.contains("would need 11 Fargate profiles"), "{out}");
    assert!(
        out.contains("EKS's default quota is 10 per cluster"),
        "{out}"
    );
    assert!(out.contains("environment `e9`"), "{out}");
    assert!(out.contains("fargate_profile_quota"), "{out}");

    // A raised quota, stated in the stack, lets them through.
    let raised = with_environments(200, "\nfargate_profile_quota = 201");
    let s = parse_in(dir.path(), &raised).unwrap_or_else(|e| panic!("{e}"));
    let profiles = s
        .desired()
        .unwrap()
        .resources()
        .iter()
        .filter(|(a, _)| a.kind() == "eks_fargate_profile")
        .count();
    assert_eq!(profiles, 201);
    let out = errors(&with_environments(200, "\nfargate_profile_quota = 150"));
    assert!(out.contains("your `fargate_profile_quota` is 150"), "{out}");
    assert!(out.contains("environment `e149`"), "{out}");

    let out = errors(&with_environments(1, "\nfargate_profile_quota = 0"));
    assert!(
        out.contains("`fargate_profile_quota` `0` is out of range"),
        "{out}"
    );
}
