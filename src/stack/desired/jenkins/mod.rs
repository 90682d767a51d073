//! Jenkins on EC2: the master and the volume its home lives on, the build
//! agents, the production agent, their security groups and the identities
//! each runs as.
//!
//! * The **master** runs no builds. Its role reads and writes its own SSM
//!   parameters (admin password, webhook token, the agents' public key) and
//!   finds agents: it lists the stack's running instances tagged
//!   [`AGENT_TAG`] and reads each one's SSH host key from its console output
//!   (see [`agents`]). Nothing about an agent is in the master's user data,
//!   so agents come and go without touching the master.
//! * **Build agents** (`[jenkins.agents] count`) build every branch. Their
//!   role pushes to and pulls from the stack's ECR repository and describes
//!   the cluster; in Kubernetes they deploy to the environments that are
//!   not `protected`.
//! * The **production agent**, made when an environment is `protected`,
//!   is the only identity that may deploy there. The master lets only the
//!   protected branches' builds and the drift job run on it (the
//!   job-restrictions node property); the Jenkinsfile sends those builds
//!   to its label.

mod agents;
mod casc;
mod userdata;

use crate::stack::jenkins_release as release;

use serde_json::{Value, json};

use super::{Builder, arn, aws, id, list, lit, policy, service_trust};
use crate::addr::{Address, AddressError};
use crate::resource::{Expr, Resource};

/// The Kubernetes group the build agents' role is mapped to; the
/// RoleBindings of the environments that are not protected grant it deploy
/// rights.
pub(super) const DEPLOYERS_GROUP: &str = "slipway-deployers";

/// The Kubernetes group the production agent's role is mapped to: deploy
/// rights in the protected environments, read rights in the environments
/// they promote from.
pub(super) const PRODUCTION_DEPLOYERS_GROUP: &str = "slipway-production-deployers";

/// The tag whose value is an agent's Jenkins node name; the master adds
/// every running instance of the stack that carries it.
pub(super) const AGENT_TAG: &str = "slipway:jenkins-agent";

/// The tag saying which pool an agent serves: `build` or `production`.
pub(super) const POOL_TAG: &str = "slipway:jenkins-pool";

pub(super) use crate::stack::{
    JENKINS_BUILD_LABEL as BUILD_LABEL, JENKINS_PRODUCTION_LABEL as PRODUCTION_LABEL,
};

/// The HTTPS port of the UI (from `allowed_cidrs`).
pub const UI_PORT: u16 = 443;

/// The HTTPS port that serves only the push webhook (from `webhook_cidrs`).
pub const WEBHOOK_PORT: u16 = 8443;

/// The networks the stack's subnets give the instances.
pub(super) struct Subnets<'a> {
    pub public: &'a [Address],
    pub private: &'a [Address],
    /// What gives the public subnets internet access.
    pub public_egress: &'a [Address],
    /// What gives the private subnets NAT access.
    pub private_egress: &'a [Address],
}

/// The identities Jenkins runs as.
pub(super) struct Roles {
    /// The build agents'.
    pub agent: Address,
    /// The production agent's, when an environment is protected.
    pub production: Option<Address>,
    /// The read-only role the drift job assumes.
    pub drift: Address,
}

/// The SSM parameter names the Jenkins instances use, under
/// `/slipway/<stack>/jenkins/`.
pub(super) fn param_prefix(stack: &str) -> String {
    format!("/slipway/{stack}/jenkins")
}

/// The admin password (SecureString; the master only).
pub(super) const ADMIN_PASSWORD_PARAM: &str = "admin-password";
/// The webhook token (SecureString; the master only).
pub(super) const WEBHOOK_TOKEN_PARAM: &str = "webhook-token";
/// The public key the master launches agents with (String; the agents read it).
pub(super) const AGENT_KEY_PARAM: &str = "agent-ssh-public-key";

fn parameter_arn(b: &Builder<'_>, name: &str) -> String {
    format!(
        "arn:{}:ssm:{}:*:parameter{}",
        b.partition(),
        b.s.region,
        if name.starts_with('/') {
            name.to_string()
        } else {
            format!("{}/{name}", param_prefix(&b.s.name))
        }
    )
}

/// Does the stack have a production pool (an environment is protected)?
pub(super) fn has_production(s: &crate::stack::Stack) -> bool {
    s.environments.iter().any(|e| e.protected)
}

/// Security groups, identities, instances and the home volume.
pub(super) fn build(
    b: &mut Builder<'_>,
    vpc: &Address,
    net: &Subnets<'_>,
    registry: &Address,
    cluster: &Address,
) -> Result<Roles, AddressError> {
    let (master_sg, agent_sg) = security_groups(b, vpc)?;
    let roles = iam(b, registry, cluster)?;
    instances(b, net, &master_sg, &agent_sg, &roles)?;
    Ok(roles)
}

fn security_groups(b: &mut Builder<'_>, vpc: &Address) -> Result<(Address, Address), AddressError> {
    let s = b.s;
    let group = |b: &mut Builder<'_>, name: &str, what: &str| -> Result<Address, AddressError> {
        let addr = aws("security_group", name)?;
        let aws_name = b.named(&name.replace('_', "-"));
        b.push(
            Resource::new(addr.clone())
                .attr("name", aws_name.as_str())
                .attr("description", format!("{what} of slipway stack {}", s.name))
                .attr("vpc_id", id(vpc))
                .attr("tags", b.tags(&addr, &aws_name, &[])),
        );
        Ok(addr)
    };
    let master = group(b, "jenkins_master", "Jenkins master")?;
    let agent = group(b, "jenkins_agent", "Jenkins agents")?;

    let cidrs = |c: &[ipnet::Ipv4Net]| list(c.iter().map(|c| Expr::str(c.to_string())));
    let tag = |addr: &Address| b.tags(addr, &b.named(&addr.name().replace('_', "-")), &[]);
    let rule = |name: &str,
                sg: &Address,
                port: u16,
                description: &str|
     -> Result<Resource, AddressError> {
        let addr = aws("security_group_rule", name)?;
        Ok(Resource::new(addr.clone())
            .within(sg)
            .attr("tags", tag(&addr))
            .attr("security_group_id", id(sg))
            .attr("type", "ingress")
            .attr("protocol", "tcp")
            .attr("from_port", u64::from(port))
            .attr("to_port", u64::from(port))
            .attr("description", description))
    };
    let j = &s.jenkins;
    let mut rules = vec![
        rule(
            "jenkins_master_https",
            &master,
            UI_PORT,
            "Jenkins UI and API over HTTPS",
        )?
        .attr("cidr_blocks", cidrs(&j.allowed_cidrs)),
        rule(
            "jenkins_agent_ssh",
            &agent,
            22,
            "SSH from the Jenkins master",
        )?
        .attr("source_security_group_id", id(&master)),
    ];
    if !j.webhook_cidrs.is_empty() {
        rules.push(
            rule(
                "jenkins_master_webhook",
                &master,
                WEBHOOK_PORT,
                "Push webhooks to Jenkins (that path only)",
            )?
            .attr("cidr_blocks", cidrs(&j.webhook_cidrs)),
        );
    }
    // SSH needs a key pair; without one, use SSM Session Manager.
    if j.key_name.is_some() {
        rules.push(
            rule(
                "jenkins_master_ssh",
                &master,
                22,
                "SSH to the Jenkins master",
            )?
            .attr("cidr_blocks", cidrs(&j.allowed_cidrs)),
        );
    }
    for r in rules {
        b.push(r);
    }
    Ok((master, agent))
}

/// The drift role's whole policy: the reads `slipway drift` makes, and no
/// action that writes.
pub(super) const DRIFT_READ_ACTIONS: &[&str] = &[
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

/// What a build needs from ECR: push and pull in the stack's repository.
pub(super) const ECR_PUSH_PULL_ACTIONS: &[&str] = &[
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
];

/// A role for EC2 instances with one inline policy and an instance profile,
/// all named `<stack>-<name>`.
fn instance_role(
    b: &mut Builder<'_>,
    name: &str,
    statements: Vec<Expr>,
) -> Result<Address, AddressError> {
    let role = aws("iam_role", name)?;
    let aws_name = b.named(&name.replace('_', "-"));
    b.push(
        Resource::new(role.clone())
            .attr("name", aws_name.as_str())
            .attr("assume_role_policy", service_trust("ec2.amazonaws.com"))
            .attr("tags", b.tags(&role, &aws_name, &[])),
    );
    b.push(
        Resource::new(aws("iam_role_policy", name)?)
            .within(&role)
            .attr("role", Expr::reference(&role, "name"))
            .attr("name", format!("slipway-{}", name.replace('_', "-")))
            .attr("policy", policy(statements)),
    );
    let profile = aws("iam_instance_profile", name)?;
    b.push(
        Resource::new(profile.clone())
            .attr("name", aws_name.as_str())
            .attr("role", Expr::reference(&role, "name"))
            .attr("tags", b.tags(&profile, &aws_name, &[])),
    );
    Ok(role)
}

fn statement(sid: &str, actions: Value, resource: Expr) -> Expr {
    Expr::map([
        ("Sid", Expr::str(sid)),
        ("Effect", Expr::str("Allow")),
        ("Action", lit(actions)),
        ("Resource", resource),
    ])
}

/// What a build (or a production deploy) may do in AWS.
fn deploy_statements(b: &Builder<'_>, registry: &Address, cluster: &Address) -> Vec<Expr> {
    vec![
        // No resource-level permissions: the token is for the registry.
        statement(
            "EcrLogin",
            json!("ecr:GetAuthorizationToken"),
            Expr::str("*"),
        ),
        statement(
            "EcrPushPullThisRepository",
            json!(ECR_PUSH_PULL_ACTIONS),
            arn(registry),
        ),
        statement(
            "ReadAgentKey",
            json!("ssm:GetParameter"),
            Expr::str(parameter_arn(b, AGENT_KEY_PARAM)),
        ),
        statement(
            "DescribeThisCluster",
            json!("eks:DescribeCluster"),
            arn(cluster),
        ),
        // `deploy` waits until the load balancer's targets are the new pods,
        // healthy; the action has no resource-level permissions.
        statement(
            "ReadTargetHealth",
            json!("elasticloadbalancing:DescribeTargetHealth"),
            Expr::str("*"),
        ),
    ]
}

fn iam(b: &mut Builder<'_>, registry: &Address, cluster: &Address) -> Result<Roles, AddressError> {
    let s = b.s;
    let mut master = vec![
        statement(
            "OwnParameters",
            json!(["ssm:GetParameter", "ssm:PutParameter"]),
            lit(json!([
                parameter_arn(b, ADMIN_PASSWORD_PARAM),
                parameter_arn(b, WEBHOOK_TOKEN_PARAM),
                parameter_arn(b, AGENT_KEY_PARAM),
            ])),
        ),
        // No resource-level permissions for Describe.
        statement("FindAgents", json!("ec2:DescribeInstances"), Expr::str("*")),
        Expr::map([
            ("Sid", Expr::str("ReadAgentHostKeys")),
            ("Effect", Expr::str("Allow")),
            ("Action", Expr::str("ec2:GetConsoleOutput")),
            (
                "Resource",
                Expr::str(format!(
                    "arn:{}:ec2:{}:*:instance/*",
                    b.partition(),
                    s.region
                )),
            ),
            (
                "Condition",
                lit(json!({
                    "StringEquals": {"aws:ResourceTag/slipway:stack": s.name},
                    "StringLike": {format!("aws:ResourceTag/{AGENT_TAG}"): "*"},
                })),
            ),
        ]),
    ];
    if let Some(path) = &s.jenkins.tls_parameter_path {
        master.push(statement(
            "ReadCertificate",
            json!("ssm:GetParameter"),
            lit(json!([
                parameter_arn(b, &format!("{path}/certificate")),
                parameter_arn(b, &format!("{path}/private-key")),
            ])),
        ));
    }
    instance_role(b, "jenkins_master", master)?;

    let production = has_production(s);
    // The drift role's trust names the role that runs the drift job: the
    // production agent's when there is one, so that builds of other branches
    // (whose agents may read nothing else) cannot read the cluster's Secrets.
    let agent = aws("iam_role", "jenkins_agent")?;
    let production_role = aws("iam_role", "jenkins_production")?;
    let drift = drift_iam(b, if production { &production_role } else { &agent })?;
    let assume_drift = Expr::map([
        ("Sid", Expr::str("AssumeDriftRole")),
        ("Effect", Expr::str("Allow")),
        ("Action", Expr::str("sts:AssumeRole")),
        ("Resource", arn(&drift)),
    ]);
    let mut build = deploy_statements(b, registry, cluster);
    if !production {
        build.push(assume_drift.clone());
    }
    instance_role(b, "jenkins_agent", build)?;
    let production = if production {
        let mut statements = deploy_statements(b, registry, cluster);
        statements.push(assume_drift);
        Some(instance_role(b, "jenkins_production", statements)?)
    } else {
        None
    };
    Ok(Roles {
        agent,
        production,
        drift,
    })
}

/// The role Jenkins' drift job runs `slipway drift` as: only the identity
/// that runs the job may assume it, and it may only read.
fn drift_iam(b: &mut Builder<'_>, runner: &Address) -> Result<Address, AddressError> {
    let role = aws("iam_role", "drift")?;
    let aws_name = b.named("drift");
    let mut statements = vec![json!({
        "Sid": "ReadForDrift",
        "Effect": "Allow",
        "Action": DRIFT_READ_ACTIONS,
        "Resource": "*",
    })];
    // With the S3 backend, the job reads the state (never the lock: drift
    // takes none).
    if let crate::stack::StateBackend::S3(at) = &b.s.state {
        let partition = b.partition();
        statements.push(json!({
            "Sid": "ReadState",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": format!("arn:{partition}:s3:::{}/{}", at.bucket, at.key),
        }));
        if at.kms_key_id.is_some() {
            statements.push(json!({
                "Sid": "DecryptState",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:ViaService": format!("s3.{}.amazonaws.com", at.region)}},
            }));
        }
    }
    let trust = policy(vec![Expr::map([
        ("Effect", Expr::str("Allow")),
        ("Principal", Expr::map([("AWS", arn(runner))])),
        ("Action", Expr::str("sts:AssumeRole")),
    ])]);
    b.push(
        Resource::new(role.clone())
            .attr("name", aws_name.as_str())
            .attr("assume_role_policy", trust)
            .attr("tags", b.tags(&role, &aws_name, &[]))
            // The trust names the runner's role: it must exist first.
            .after(runner),
    );
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
                    "Statement": statements,
                })),
            ),
    );
    Ok(role)
}

/// The branches whose builds run on the production agent: the protected
/// environments'.
pub(crate) fn production_branches(s: &crate::stack::Stack) -> Vec<&str> {
    s.environments
        .iter()
        .filter(|e| e.protected)
        .map(|e| e.branch.as_str())
        .collect()
}

fn instances(
    b: &mut Builder<'_>,
    net: &Subnets<'_>,
    master_sg: &Address,
    agent_sg: &Address,
    roles: &Roles,
) -> Result<(), AddressError> {
    let s = b.s;
    let j = &s.jenkins;
    let base = |addr: &Address,
                subnet: &Address,
                sg: &Address,
                profile: &str,
                instance_type: &str,
                volume: i64,
                user_data: Expr|
     -> Result<Resource, AddressError> {
        let profile = aws("iam_instance_profile", profile)?;
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
            .attr("user_data", user_data);
        if let Some(k) = &j.key_name {
            r = r.attr("key_name", k.as_str());
        }
        Ok(r)
    };
    let kubectl = release::kubectl(&s.cluster.version);
    let agent = |b: &mut Builder<'_>,
                 addr: &Address,
                 subnet: &Address,
                 node: &str,
                 pool: &str,
                 profile: &str,
                 role: &Address|
     -> Result<(), AddressError> {
        let user_data = userdata::agent(&userdata::Agent {
            stack: &s.name,
            region: &s.region,
            name: node,
            kubectl,
            slipway: j.slipway.as_ref(),
        });
        let mut r = base(
            addr,
            subnet,
            agent_sg,
            profile,
            &j.agent_instance_type,
            j.agent_volume_size,
            user_data,
        )?
        .attr(
            "tags",
            b.tags(
                addr,
                &b.named(&format!("jenkins-{node}")),
                &[
                    (AGENT_TAG.to_string(), node.to_string()),
                    (POOL_TAG.to_string(), pool.to_string()),
                ],
            ),
        )
        .after(role);
        for e in net.private_egress {
            r = r.after(e);
        }
        b.push(r);
        Ok(())
    };
    for n in 1..=j.agent_count {
        let addr = aws("instance", &format!("jenkins_agent_{n}"))?;
        let Some(subnet) = net.private.get((n - 1) % net.private.len().max(1)) else {
            continue;
        };
        agent(
            b,
            &addr,
            subnet,
            &format!("agent-{n}"),
            "build",
            "jenkins_agent",
            &roles.agent,
        )?;
    }
    if let (Some(role), Some(subnet)) = (&roles.production, net.private.first()) {
        let addr = aws("instance", "jenkins_production_agent")?;
        agent(
            b,
            &addr,
            subnet,
            "production",
            "production",
            "jenkins_production",
            role,
        )?;
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
    // A fixed address: the webhook URL, the certificate's name and
    // bookmarks outlive a replaced master.
    let eip = aws("eip", "jenkins_master")?;
    b.push(
        Resource::new(eip.clone())
            .attr("domain", "vpc")
            .attr("tags", b.tags(&eip, &b.named("jenkins-master"), &[])),
    );
    let user_data = userdata::master(&userdata::Master {
        stack: &s.name,
        region: &s.region,
        stack_path: repository_path(s),
        repository_url: &j.repository_url,
        branches: s.environments.iter().map(|e| e.branch.as_str()).collect(),
        production_branches: production_branches(s),
        drift_role_arn: arn(&roles.drift),
        home_volume: id(&home),
        public_ip: Expr::reference(&eip, "public_ip"),
        // Production's branch: a protected environment's, else the first.
        drift_branch: s
            .environments
            .iter()
            .find(|e| e.protected)
            .or(s.environments.first())
            .map_or("master", |e| e.branch.as_str()),
        webhooks: !j.webhook_cidrs.is_empty(),
        scan_interval: &j.scan_interval,
        tls_parameter_path: j.tls_parameter_path.as_deref(),
        build_profile: b.named("jenkins-agent"),
        production_profile: b.named("jenkins-production"),
    });
    let master_role = aws("iam_role", "jenkins_master")?;
    let mut r = base(
        &master,
        public_a,
        master_sg,
        "jenkins_master",
        &j.master_instance_type,
        j.master_volume_size,
        user_data,
    )?
    .attr("tags", b.tags(&master, &b.named("jenkins-master"), &[]))
    .after(&master_role);
    for e in net.public_egress {
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
    b.push(
        Resource::new(aws("eip_association", "jenkins_master")?)
            .within(&master)
            .attr("allocation_id", id(&eip))
            .attr("instance_id", id(&master)),
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
