//! AWS resources: network, security groups, IAM, EC2, ECR, EKS.

use serde_json::json;

use super::{Builder, Shared, arn, aws, id, list, lit, policy, service_trust};
use crate::addr::{Address, AddressError};
use crate::resource::{Expr, Resource};
use crate::stack::Nat;

/// The Kubernetes group the Jenkins role is mapped to; the per-environment
/// RoleBindings grant it deploy rights.
pub(super) const DEPLOYERS_GROUP: &str = "slipway-deployers";

pub(super) fn build(b: &mut Builder<'_>) -> Result<Shared, AddressError> {
    let net = network(b)?;
    let sgs = security_groups(b, &net)?;
    let registry = ecr(b)?;
    let cluster = eks_cluster(b, &net)?;
    let roles = jenkins_iam(b, &registry, &cluster)?;
    instances(b, &net, &sgs, &roles)?;
    let (kube_system_profile, lb_controller_role, lb_controller_permissions) =
        eks_extras(b, &net, &cluster, &roles)?;
    Ok(Shared {
        vpc: net.vpc,
        cluster,
        kube_system_profile,
        lb_controller_role,
        lb_controller_permissions,
    })
}

struct Net {
    vpc: Address,
    public: Vec<Address>,
    private: Vec<Address>,
    /// Route and association that give the public subnets internet access.
    public_egress: Vec<Address>,
    /// Routes and associations that give the private subnets NAT access.
    private_egress: Vec<Address>,
}

fn network(b: &mut Builder<'_>) -> Result<Net, AddressError> {
    let s = b.s;
    let cluster_tag = (
        format!("kubernetes.io/cluster/{}", s.cluster.name),
        "shared".to_string(),
    );
    let vpc = aws("vpc", "main")?;
    b.push(
        Resource::new(vpc.clone())
            .attr("cidr_block", s.network.cidr.to_string())
            .attr("enable_dns_support", true)
            .attr("enable_dns_hostnames", true)
            .attr("tags", b.tags(&vpc, &s.name, &[])),
    );
    let igw = aws("internet_gateway", "main")?;
    b.push(
        Resource::new(igw.clone())
            .attr("vpc_id", id(&vpc))
            .attr("tags", b.tags(&igw, &s.name, &[])),
    );

    let azs = b.azs();
    let mut public = Vec::new();
    let mut private = Vec::new();
    for (i, (letter, az)) in azs.iter().enumerate() {
        for (tier, cidrs, role_tag, out) in [
            (
                "public",
                &s.network.public,
                "kubernetes.io/role/elb",
                &mut public,
            ),
            (
                "private",
                &s.network.private,
                "kubernetes.io/role/internal-elb",
                &mut private,
            ),
        ] {
            let Some(cidr) = cidrs.get(i) else { continue };
            let subnet = aws("subnet", &format!("{tier}_{letter}"))?;
            let tags = b.tags(
                &subnet,
                &b.named(&format!("{tier}-{az}")),
                &[(role_tag.to_string(), "1".to_string()), cluster_tag.clone()],
            );
            b.push(
                Resource::new(subnet.clone())
                    .attr("vpc_id", id(&vpc))
                    .attr("cidr_block", cidr.to_string())
                    .attr("availability_zone", az.as_str())
                    .attr("map_public_ip_on_launch", tier == "public")
                    .attr("tags", tags),
            );
            out.push(subnet);
        }
    }

    // NAT gateways: one in the first AZ, or one per AZ.
    let nat_count = match s.network.nat {
        Nat::Single => 1,
        Nat::PerAz => azs.len(),
    };
    let mut nats = Vec::new();
    for ((letter, az), subnet) in azs.iter().zip(&public).take(nat_count) {
        let eip = aws("eip", &format!("nat_{letter}"))?;
        b.push(
            Resource::new(eip.clone())
                .attr("domain", "vpc")
                .attr("tags", b.tags(&eip, &b.named(&format!("nat-{az}")), &[]))
                .after(&igw),
        );
        let nat = aws("nat_gateway", &format!("nat_{letter}"))?;
        b.push(
            Resource::new(nat.clone())
                .attr("subnet_id", id(subnet))
                .attr("allocation_id", id(&eip))
                .attr("connectivity_type", "public")
                .attr("tags", b.tags(&nat, &b.named(&format!("nat-{az}")), &[]))
                .after(&igw),
        );
        nats.push(nat);
    }

    let public_rt = aws("route_table", "public")?;
    b.push(
        Resource::new(public_rt.clone())
            .attr("vpc_id", id(&vpc))
            .attr("tags", b.tags(&public_rt, &b.named("public"), &[])),
    );
    let public_route = aws("route", "public_internet")?;
    b.push(
        Resource::new(public_route.clone())
            .within(&public_rt)
            .attr("route_table_id", id(&public_rt))
            .attr("destination_cidr_block", "0.0.0.0/0")
            .attr("gateway_id", id(&igw)),
    );
    let mut public_egress = vec![public_route];
    for ((letter, _), subnet) in azs.iter().zip(&public) {
        let assoc = aws("route_table_association", &format!("public_{letter}"))?;
        b.push(
            Resource::new(assoc.clone())
                .within(&public_rt)
                .attr("subnet_id", id(subnet))
                .attr("route_table_id", id(&public_rt)),
        );
        public_egress.push(assoc);
    }

    let mut private_egress = Vec::new();
    for (i, ((letter, az), subnet)) in azs.iter().zip(&private).enumerate() {
        let rt = aws("route_table", &format!("private_{letter}"))?;
        b.push(
            Resource::new(rt.clone())
                .attr("vpc_id", id(&vpc))
                .attr("tags", b.tags(&rt, &b.named(&format!("private-{az}")), &[])),
        );
        let nat = nats.get(i).or(nats.first()).cloned();
        let route = aws("route", &format!("private_{letter}_nat"))?;
        let mut r = Resource::new(route.clone())
            .within(&rt)
            .attr("route_table_id", id(&rt))
            .attr("destination_cidr_block", "0.0.0.0/0");
        if let Some(nat) = &nat {
            r = r.attr("nat_gateway_id", id(nat));
        }
        b.push(r);
        let assoc = aws("route_table_association", &format!("private_{letter}"))?;
        b.push(
            Resource::new(assoc.clone())
                .within(&rt)
                .attr("subnet_id", id(subnet))
                .attr("route_table_id", id(&rt)),
        );
        private_egress.push(route);
        private_egress.push(assoc);
    }
    Ok(Net {
        vpc,
        public,
        private,
        public_egress,
        private_egress,
    })
}

struct Sgs {
    master: Address,
    agent: Address,
}

fn security_groups(b: &mut Builder<'_>, net: &Net) -> Result<Sgs, AddressError> {
    let s = b.s;
    let group = |b: &mut Builder<'_>, name: &str, what: &str| -> Result<Address, AddressError> {
        let addr = aws("security_group", name)?;
        let aws_name = b.named(&name.replace('_', "-"));
        b.push(
            Resource::new(addr.clone())
                .attr("name", aws_name.as_str())
                .attr("description", format!("{what} of slipway stack {}", s.name))
                .attr("vpc_id", id(&net.vpc))
                .attr("tags", b.tags(&addr, &aws_name, &[])),
        );
        Ok(addr)
    };
    let master = group(b, "jenkins_master", "Jenkins master")?;
    let agent = group(b, "jenkins_agent", "Jenkins agents")?;

    let allowed: Vec<Expr> = s
        .jenkins
        .allowed_cidrs
        .iter()
        .map(|c| Expr::str(c.to_string()))
        .collect();
    let tag = |addr: &Address| b.tags(addr, &b.named(&addr.name().replace('_', "-")), &[]);
    let rule = |name: &str,
                sg: &Address,
                port: u64,
                description: &str|
     -> Result<Resource, AddressError> {
        let addr = aws("security_group_rule", name)?;
        Ok(Resource::new(addr.clone())
            .within(sg)
            .attr("tags", tag(&addr))
            .attr("security_group_id", id(sg))
            .attr("type", "ingress")
            .attr("protocol", "tcp")
            .attr("from_port", port)
            .attr("to_port", port)
            .attr("description", description))
    };
    let rules = vec![
        rule("jenkins_master_http", &master, 8080, "Jenkins UI and API")?
            .attr("cidr_blocks", list(allowed.clone())),
        rule(
            "jenkins_master_ssh",
            &master,
            22,
            "SSH to the Jenkins master",
        )?
        .attr("cidr_blocks", list(allowed)),
        rule(
            "jenkins_master_agent_port",
            &master,
            50000,
            "Inbound Jenkins agents",
        )?
        .attr("source_security_group_id", id(&agent)),
        rule(
            "jenkins_agent_ssh",
            &agent,
            22,
            "SSH from the Jenkins master",
        )?
        .attr("source_security_group_id", id(&master)),
    ];
    for r in rules {
        b.push(r);
    }
    Ok(Sgs { master, agent })
}

fn ecr(b: &mut Builder<'_>) -> Result<Address, AddressError> {
    let r = &b.s.registry;
    let repo = aws("ecr_repository", "app")?;
    b.push(
        // It holds the images: never deleted or replaced unasked.
        Resource::new(repo.clone())
            .protect()
            .attr("name", r.repository.as_str())
            .attr("image_tag_mutability", r.tag_mutability.as_str())
            .attr("scan_on_push", r.scan_on_push)
            .attr("encryption_type", "AES256")
            .attr("tags", b.tags(&repo, &r.repository, &[])),
    );
    let keep = r.keep_images;
    b.push(
        Resource::new(aws("ecr_lifecycle_policy", "app")?)
            .within(&repo)
            .attr("repository", Expr::reference(&repo, "name"))
            .attr(
                "policy",
                lit(json!({
                    "rules": [{
                        "rulePriority": 1,
                        "description": format!("keep the last {keep} images"),
                        "selection": {
                            "tagStatus": "any",
                            "countType": "imageCountMoreThan",
                            "countNumber": keep,
                        },
                        "action": {"type": "expire"},
                    }],
                })),
            ),
    );
    Ok(repo)
}

/// A role named `<stack>-<name>` that `trust` lets assume.
fn role(b: &mut Builder<'_>, name: &str, trust: Expr) -> Result<Address, AddressError> {
    let role = aws("iam_role", name)?;
    let aws_name = b.named(&name.replace('_', "-"));
    b.push(
        Resource::new(role.clone())
            .attr("name", aws_name.as_str())
            .attr("assume_role_policy", trust)
            .attr("tags", b.tags(&role, &aws_name, &[])),
    );
    Ok(role)
}

/// A role assumable by an AWS service, with managed policies attached.
fn service_role(
    b: &mut Builder<'_>,
    name: &str,
    service: &str,
    managed: &[&str],
) -> Result<(Address, Vec<Address>), AddressError> {
    let role = role(b, name, service_trust(service))?;
    let mut attachments = Vec::new();
    for policy_name in managed {
        let att = aws("iam_role_policy_attachment", name)?;
        b.push(
            Resource::new(att.clone())
                .within(&role)
                .attr("role", Expr::reference(&role, "name"))
                .attr("policy_arn", b.managed_policy(policy_name)),
        );
        attachments.push(att);
    }
    Ok((role, attachments))
}

fn eks_cluster(b: &mut Builder<'_>, net: &Net) -> Result<Address, AddressError> {
    let (role, attachments) = service_role(
        b,
        "eks_cluster",
        "eks.amazonaws.com",
        &["AmazonEKSClusterPolicy"],
    )?;
    let c = &b.s.cluster;
    let cluster = aws("eks_cluster", "main")?;
    let subnets = list(net.private.iter().chain(&net.public).map(id));
    // Everything in it goes with it: never deleted or replaced unasked.
    let mut r = Resource::new(cluster.clone())
        .protect()
        .attr("name", c.name.as_str())
        .attr("version", c.version.as_str())
        .attr("role_arn", arn(&role))
        .attr("subnet_ids", subnets)
        .attr("endpoint_public_access", c.endpoint_public_access)
        .attr("endpoint_private_access", true)
        .attr(
            "public_access_cidrs",
            list(
                c.public_access_cidrs
                    .iter()
                    .map(|n| Expr::str(n.to_string())),
            ),
        )
        .attr(
            "enabled_log_types",
            list(c.logging.iter().map(|l| Expr::str(l.as_str()))),
        )
        .attr("authentication_mode", "API_AND_CONFIG_MAP")
        .attr("tags", b.tags(&cluster, &c.name, &[]));
    for a in &attachments {
        r = r.after(a);
    }
    b.push(r);
    Ok(cluster)
}

/// The drift role's whole policy: the reads `slipway drift` makes, and no
/// action that writes.
const DRIFT_READ_ACTIONS: &[&str] = &[
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

/// The roles Jenkins runs as: its instances' role, and the read-only role
/// its drift job assumes.
struct Roles {
    jenkins: Address,
    drift: Address,
}

fn jenkins_iam(
    b: &mut Builder<'_>,
    registry: &Address,
    cluster: &Address,
) -> Result<Roles, AddressError> {
    let (role, _) = service_role(b, "jenkins", "ec2.amazonaws.com", &[])?;
    let drift = drift_iam(b, &role)?;
    b.push(
        Resource::new(aws("iam_role_policy", "jenkins_deploy")?)
            .within(&role)
            .attr("role", Expr::reference(&role, "name"))
            .attr("name", "slipway-deploy")
            .attr(
                "policy",
                policy(vec![
                    lit(json!({
                        "Sid": "EcrLogin",
                        "Effect": "Allow",
                        "Action": "ecr:GetAuthorizationToken",
                        "Resource": "*",
                    })),
                    Expr::map([
                        ("Sid", Expr::str("EcrPushPullThisRepository")),
                        ("Effect", Expr::str("Allow")),
                        (
                            "Action",
                            lit(json!([
                                "ecr:BatchCheckLayerAvailability",
                                "ecr:BatchGetImage",
                                "ecr:CompleteLayerUpload",
                                "ecr:DescribeImages",
                                "ecr:DescribeRepositories",
                                "ecr:GetDownloadUrlForLayer",
                                "ecr:InitiateLayerUpload",
                                "ecr:ListImages",
                                "ecr:PutImage",
                                "ecr:UploadLayerPart",
                            ])),
                        ),
                        ("Resource", arn(registry)),
                    ]),
                    lit(json!({
                        "Sid": "JenkinsParameters",
                        "Effect": "Allow",
                        "Action": ["ssm:GetParameter", "ssm:PutParameter"],
                        "Resource": super::jenkins::parameter_arn(b.partition(), &b.s.region, &b.s.name),
                    })),
                    Expr::map([
                        ("Sid", Expr::str("DescribeThisCluster")),
                        ("Effect", Expr::str("Allow")),
                        ("Action", Expr::str("eks:DescribeCluster")),
                        ("Resource", arn(cluster)),
                    ]),
                    // `deploy` waits until the load balancer's targets are
                    // the new pods, healthy; the action has no resource-level
                    // permissions.
                    lit(json!({
                        "Sid": "ReadTargetHealth",
                        "Effect": "Allow",
                        "Action": "elasticloadbalancing:DescribeTargetHealth",
                        "Resource": "*",
                    })),
                    // The hourly drift job runs slipway under the read-only role.
                    Expr::map([
                        ("Sid", Expr::str("AssumeDriftRole")),
                        ("Effect", Expr::str("Allow")),
                        ("Action", Expr::str("sts:AssumeRole")),
                        ("Resource", arn(&drift)),
                    ]),
                ]),
            ),
    );
    let profile = aws("iam_instance_profile", "jenkins")?;
    let name = b.named("jenkins");
    b.push(
        Resource::new(profile.clone())
            .attr("name", name.as_str())
            .attr("role", Expr::reference(&role, "name"))
            .attr("tags", b.tags(&profile, &name, &[])),
    );
    Ok(Roles {
        jenkins: role,
        drift,
    })
}

/// The role Jenkins' drift job runs `slipway drift` as: only the Jenkins role
/// may assume it, and it may only read.
fn drift_iam(b: &mut Builder<'_>, jenkins_role: &Address) -> Result<Address, AddressError> {
    let trust = policy(vec![Expr::map([
        ("Effect", Expr::str("Allow")),
        ("Principal", Expr::map([("AWS", arn(jenkins_role))])),
        ("Action", Expr::str("sts:AssumeRole")),
    ])]);
    let role = role(b, "drift", trust)?;
    b.push(
        Resource::new(aws("iam_role_policy", "drift_read")?)
            .within(&role)
            .attr("role", Expr::reference(&role, "name"))
            .attr("name", "slipway-drift-read")
            .attr(
                "policy",
                // `*`: the EC2 and ELBv2 Describe actions, the account-wide
                // List actions and `sts:GetCallerIdentity` have no
                // resource-level permissions, and drift reads every object
                // of a kind at once (ECR's repositories, IAM's policies and
                // OIDC providers), not only the stack's. Every action reads.
                lit(json!({
                    "Version": "2012-10-17",
                    "Statement": [{
                        "Sid": "ReadForDrift",
                        "Effect": "Allow",
                        "Action": DRIFT_READ_ACTIONS,
                        "Resource": "*",
                    }],
                })),
            ),
    );
    Ok(role)
}

fn instances(b: &mut Builder<'_>, net: &Net, sgs: &Sgs, roles: &Roles) -> Result<(), AddressError> {
    let s = b.s;
    let j = &s.jenkins;
    let profile = aws("iam_instance_profile", "jenkins")?;
    let base = |addr: &Address,
                subnet: &Address,
                sg: &Address,
                instance_type: &str,
                volume: i64,
                user_data: Expr| {
        let mut r = Resource::new(addr.clone())
            .attr("ami_parameter", j.ami_parameter.as_str())
            .attr("instance_type", instance_type)
            .attr("subnet_id", id(subnet))
            .attr("vpc_security_group_ids", list([id(sg)]))
            .attr("iam_instance_profile", Expr::reference(&profile, "name"))
            // Hop limit 2 lets containers on the instance (docker builds)
            // reach IMDSv2 for the instance role.
            .attr(
                "metadata_options",
                lit(json!({"http_tokens": "required", "http_put_response_hop_limit": 2})),
            )
            .attr("root_volume_size", lit(json!(volume)))
            .attr("root_volume_encrypted", true)
            .attr("user_data", user_data)
            .after(&roles.jenkins);
        if let Some(k) = &j.key_name {
            r = r.attr("key_name", k.as_str());
        }
        r
    };
    let mut agents = Vec::new();
    for n in 1..=j.agent_count {
        let addr = aws("instance", &format!("jenkins_agent_{n}"))?;
        let i = (n - 1) % net.private.len().max(1);
        let Some(subnet) = net.private.get(i) else {
            continue;
        };
        let name = format!("agent-{n}");
        let user_data = super::jenkins::agent(&super::jenkins::Agent {
            stack: &s.name,
            region: &s.region,
            name: &name,
            kubernetes_version: &s.cluster.version,
            slipway_url: j.slipway_url.as_deref(),
        });
        let mut r = base(
            &addr,
            subnet,
            &sgs.agent,
            &j.agent_instance_type,
            j.agent_volume_size,
            user_data,
        )
        .attr(
            "tags",
            b.tags(&addr, &b.named(&format!("jenkins-agent-{n}")), &[]),
        );
        for e in &net.private_egress {
            r = r.after(e);
        }
        agents.push((name, Expr::reference(&addr, "private_ip")));
        b.push(r);
    }
    let master = aws("instance", "jenkins_master")?;
    let Some(public_a) = net.public.first() else {
        return Ok(());
    };
    // JENKINS_HOME: its own encrypted volume in the master's zone, kept
    // when the master is replaced.
    let home = aws("ebs_volume", "jenkins_home")?;
    b.push(
        Resource::new(home.clone())
            .attr(
                "availability_zone",
                Expr::reference(public_a, "availability_zone"),
            )
            .attr("size", lit(json!(j.home_volume_size)))
            .attr("volume_type", "gp3")
            .attr("encrypted", true)
            .attr("tags", b.tags(&home, &b.named("jenkins-home"), &[]))
            .protect(),
    );
    let user_data = super::jenkins::master(&super::jenkins::Master {
        stack: &s.name,
        region: &s.region,
        stack_path: repository_path(s),
        repository_url: &j.repository_url,
        branches: s.environments.iter().map(|e| e.branch.as_str()).collect(),
        agents,
        drift_role_arn: arn(&roles.drift),
        home_volume: id(&home),
        // Production's branch: a protected environment's, else the first.
        drift_branch: s
            .environments
            .iter()
            .find(|e| e.protected)
            .or(s.environments.first())
            .map_or("master", |e| e.branch.as_str()),
    });
    let mut r = base(
        &master,
        public_a,
        &sgs.master,
        &j.master_instance_type,
        j.master_volume_size,
        user_data,
    )
    .attr("tags", b.tags(&master, &b.named("jenkins-master"), &[]));
    for e in &net.public_egress {
        r = r.after(e);
    }
    b.push(r);
    b.push(
        Resource::new(aws("volume_attachment", "jenkins_home")?)
            .within(&master)
            .attr("volume_id", id(&home))
            .attr("instance_id", id(&master))
            .attr("device_name", "/dev/sdf"),
    );
    Ok(())
}

/// The stack file's path in the repository Jenkins checks out (the project
/// directory), `/`-separated, as the pipelines pass it to `--stack`.
/// The same however `--stack` spells it (relative or absolute): it is in
/// the master's user data.
fn repository_path(s: &crate::stack::Stack) -> String {
    let path = std::path::absolute(s.path()).unwrap_or_else(|_| s.path().to_path_buf());
    let root = crate::stack::validate::project_root(&path);
    path.strip_prefix(&root)
        .unwrap_or(&path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Fargate profiles, the OIDC provider, the Jenkins and drift access
/// entries and the load balancer controller's IAM role.
fn eks_extras(
    b: &mut Builder<'_>,
    net: &Net,
    cluster: &Address,
    roles: &Roles,
) -> Result<(Address, Address, Vec<Address>), AddressError> {
    let s = b.s;
    let (pod_role, pod_attachments) = service_role(
        b,
        "fargate_pod_execution",
        "eks-fargate-pods.amazonaws.com",
        &["AmazonEKSFargatePodExecutionRolePolicy"],
    )?;
    let serial = format!("eks-fargate-profiles:{}", s.cluster.name);
    let private_ids = list(net.private.iter().map(id));
    let profile = |b: &Builder<'_>, addr: &Address, name: &str, namespace: &str| {
        let mut r = Resource::new(addr.clone())
            .within(cluster)
            .attr("cluster_name", Expr::reference(cluster, "name"))
            .attr("name", name)
            .attr("pod_execution_role_arn", arn(&pod_role))
            .attr("subnet_ids", private_ids.clone())
            .attr("selectors", lit(json!([{"namespace": namespace}])))
            .attr("tags", b.tags(addr, name, &[]))
            .serial_group(&serial);
        for a in &pod_attachments {
            r = r.after(a);
        }
        // Pods pull images through the NAT as soon as the profile exists.
        for e in &net.private_egress {
            r = r.after(e);
        }
        r
    };
    let kube_system = aws("eks_fargate_profile", "kube_system")?;
    let r = profile(b, &kube_system, "kube-system", "kube-system");
    b.push(r);
    for env in &s.environments {
        let addr = aws("eks_fargate_profile", &env.name)?;
        let r = profile(b, &addr, &env.namespace, &env.namespace).env(&env.name);
        b.push(r);
    }

    let oidc = aws("iam_openid_connect_provider", "eks")?;
    b.push(
        Resource::new(oidc.clone())
            .within(cluster)
            .attr("url", Expr::reference(cluster, "oidc_issuer"))
            .attr("client_id_list", lit(json!(["sts.amazonaws.com"])))
            .attr("tags", b.tags(&oidc, &b.named("eks-oidc"), &[])),
    );

    // Jenkins: the deployers group, bound in the environment namespaces
    // only, and no access policy (one added outside shows as drift).
    let entry = aws("eks_access_entry", "jenkins")?;
    b.push(
        Resource::new(entry.clone())
            .within(cluster)
            .attr("cluster_name", Expr::reference(cluster, "name"))
            .attr("principal_arn", arn(&roles.jenkins))
            .attr("kubernetes_groups", lit(json!([DEPLOYERS_GROUP])))
            .attr("type", "STANDARD")
            .attr("access_policies", lit(json!([])))
            .attr("tags", b.tags(&entry, &b.named("jenkins"), &[])),
    );
    // The drift job: view everything, Secrets included (drift compares the
    // load balancer controller's TLS Secret), change nothing.
    let entry = aws("eks_access_entry", "drift")?;
    b.push(
        Resource::new(entry.clone())
            .within(cluster)
            .attr("cluster_name", Expr::reference(cluster, "name"))
            .attr("principal_arn", arn(&roles.drift))
            .attr("kubernetes_groups", lit(json!([])))
            .attr("type", "STANDARD")
            .attr(
                "access_policies",
                lit(json!([{
                    "policy_arn": format!("arn:{}:eks::aws:cluster-access-policy/AmazonEKSAdminViewPolicy", b.partition()),
                    "access_scope": {"type": "cluster"},
                }])),
            )
            .attr("tags", b.tags(&entry, &b.named("drift"), &[])),
    );
    // `[cluster] admins`: cluster-admin for the identities CI and cron run
    // slipway as (the cluster's creator has it already).
    let admin_policy = json!([{
        "policy_arn": format!("arn:{}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy", b.partition()),
        "access_scope": {"type": "cluster"},
    }]);
    for principal in &s.cluster.admins {
        let entry = aws("eks_access_entry", &admin_name(principal))?;
        b.push(
            Resource::new(entry.clone())
                .within(cluster)
                .attr("cluster_name", Expr::reference(cluster, "name"))
                .attr("principal_arn", principal.as_str())
                .attr("kubernetes_groups", lit(json!([])))
                .attr("type", "STANDARD")
                .attr("access_policies", lit(admin_policy.clone()))
                .attr("tags", b.tags(&entry, &b.named("admin"), &[])),
        );
    }

    // The load balancer controller: pinned policy + IRSA role.
    let release = s.ingress;
    let policy_addr = aws("iam_policy", "lb_controller")?;
    let name = b.named("lb-controller");
    let mut p = Resource::new(policy_addr.clone())
        .attr("name", name.as_str())
        // The version is a tag, not in the description: a description change
        // replaces an IAM policy, an upgrade must update it in place.
        .attr(
            "description",
            format!("AWS Load Balancer Controller for slipway stack {}", s.name),
        )
        .attr(
            "tags",
            b.tags(
                &policy_addr,
                &name,
                &[(
                    "slipway:lb-controller-version".to_string(),
                    release.version.to_string(),
                )],
            ),
        );
    if let Some(doc) = &s.ingress_policy {
        // Upstream's document is written for the `aws` partition.
        let doc = match b.partition() {
            "aws" => doc.clone(),
            other => serde_json::from_str(
                &doc.to_string()
                    .replace("arn:aws:", &format!("arn:{other}:")),
            )
            .unwrap_or_else(|_| doc.clone()),
        };
        p = p.attr("policy", lit(doc));
    }
    b.push(p);

    let role = aws("iam_role", "lb_controller")?;
    let issuer_host = Expr::reference(&oidc, "issuer_host");
    let condition_key = |suffix: &str| Expr::Concat(vec![issuer_host.clone(), Expr::str(suffix)]);
    let trust = policy(vec![Expr::map([
        ("Effect", Expr::str("Allow")),
        ("Principal", Expr::map([("Federated", arn(&oidc))])),
        ("Action", Expr::str("sts:AssumeRoleWithWebIdentity")),
        (
            "Condition",
            Expr::map([(
                "StringEquals",
                Expr::Map(vec![
                    (
                        condition_key(":sub"),
                        Expr::str(format!(
                            "system:serviceaccount:kube-system:{}",
                            super::LBC_NAME
                        )),
                    ),
                    (condition_key(":aud"), Expr::str("sts.amazonaws.com")),
                ]),
            )]),
        ),
    ])]);
    b.push(
        Resource::new(role.clone())
            .attr("name", name.as_str())
            .attr("assume_role_policy", trust)
            .attr("tags", b.tags(&role, &name, &[])),
    );
    let attachment = aws("iam_role_policy_attachment", "lb_controller")?;
    b.push(
        Resource::new(attachment.clone())
            .within(&role)
            .attr("role", Expr::reference(&role, "name"))
            .attr("policy_arn", arn(&policy_addr)),
    );
    Ok((kube_system, role, vec![policy_addr, attachment]))
}

/// `admin-<account>-<name>`: the address of an admin's access entry, from
/// its IAM ARN (`arn:aws:iam::123456789012:role/path/ci` →
/// `admin-123456789012-ci`).
fn admin_name(principal: &str) -> String {
    let account = principal.split(':').nth(4).unwrap_or_default();
    let name = principal.rsplit('/').next().unwrap_or_default();
    let kind = if principal.contains(":user/") {
        "user"
    } else {
        "role"
    };
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("admin-{kind}-{account}-{clean}")
}
