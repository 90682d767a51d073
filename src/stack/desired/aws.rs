//! AWS resources: network, security groups, IAM, EC2, ECR, EKS.

use serde_json::json;

use super::jenkins::{self, DEPLOYERS_GROUP, PRODUCTION_DEPLOYERS_GROUP, Roles};
use super::{Builder, Shared, arn, aws, id, list, lit, policy, service_trust};
use crate::addr::{Address, AddressError};
use crate::resource::{Expr, Resource};
use crate::stack::Nat;

pub(super) fn build(b: &mut Builder<'_>) -> Result<Shared, AddressError> {
    let net = network(b)?;
    let registry = ecr(b)?;
    let cluster = eks_cluster(b, &net)?;
    let roles = jenkins::build(
        b,
        &net.vpc,
        &jenkins::Subnets {
            public: &net.public,
            private: &net.private,
            public_egress: &net.public_egress,
            private_egress: &net.private_egress,
        },
        &registry,
        &cluster,
    )?;
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

    // Jenkins: the build agents' role gets the deployers group, bound in
    // the namespaces that are not protected; the production agent's gets
    // its own, bound in the protected ones. No access policy (one added
    // outside shows as drift).
    let pools = [("jenkins_agent", &roles.agent, DEPLOYERS_GROUP)]
        .into_iter()
        .chain(
            roles
                .production
                .as_ref()
                .map(|r| ("jenkins_production", r, PRODUCTION_DEPLOYERS_GROUP)),
        );
    for (name, role, group) in pools {
        let entry = aws("eks_access_entry", name)?;
        b.push(
            Resource::new(entry.clone())
                .within(cluster)
                .attr("cluster_name", Expr::reference(cluster, "name"))
                .attr("principal_arn", arn(role))
                .attr("kubernetes_groups", lit(json!([group])))
                .attr("type", "STANDARD")
                .attr("access_policies", lit(json!([])))
                .attr(
                    "tags",
                    b.tags(&entry, &b.named(&name.replace('_', "-")), &[]),
                ),
        );
    }
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
