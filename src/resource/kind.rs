//! The catalog of resource kinds slipway manages: which attributes force a
//! replacement, which are computed by the cloud, and which must never be shown.

/// What the engine needs to know about one kind of resource.
#[derive(Debug)]
pub struct KindSpec {
    /// `DOMAIN.KIND`, e.g. `aws.subnet`.
    pub key: &'static str,
    /// Attributes that cannot be changed in place: a change replaces the resource.
    pub force_new: &'static [&'static str],
    /// Attributes the cloud computes; never set by the stack, known after apply.
    pub outputs: &'static [&'static str],
    /// Attributes whose values are secrets and are never printed.
    pub sensitive: &'static [&'static str],
    /// Outputs an in-place update may change (all others keep their values
    /// through an update): known only after apply when the resource updates.
    pub changed_by_update: &'static [&'static str],
    /// Attributes a read derives from the clock (a certificate due for
    /// renewal): a difference plans an update but is not drift.
    pub clock_driven: &'static [&'static str],
    /// Outputs that change without anyone changing the object (an
    /// instance's public address on a stop and start, or when an Elastic IP
    /// is associated with it), or that only record what belongs to it:
    /// refresh records them, drift never reports them.
    pub volatile: &'static [&'static str],
    /// When a replacement may be created before the old object is deleted
    /// (so what uses it can move over first). The provider's create must
    /// then never adopt the object being replaced ([`crate::provider::OpContext::replacing`]).
    pub create_before_destroy: Cbd,
}

/// Whether two objects of a kind can exist side by side for a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cbd {
    /// Never: delete, then create.
    Never,
    /// When one of these attributes changes (a name that must be unique).
    WhenChanged(&'static [&'static str]),
}

/// A certificate's outputs. The `_base64` forms are what Kubernetes
/// `[]byte` fields (Secret data, webhook caBundle) take in JSON;
/// `ca_bundle_*` is the CA plus, after the CA itself was renewed, the one
/// before it.
const TLS_OUT: &[&str] = &[
    "id",
    "ca_pem",
    "ca_key_pem",
    "ca_not_after",
    "ca_bundle_pem",
    "cert_pem",
    "key_pem",
    "not_after",
    "ca_pem_base64",
    "ca_bundle_base64",
    "cert_pem_base64",
    "key_pem_base64",
];

const fn kind(
    key: &'static str,
    force_new: &'static [&'static str],
    outputs: &'static [&'static str],
) -> KindSpec {
    KindSpec {
        key,
        force_new,
        outputs,
        sensitive: &[],
        changed_by_update: &[],
        clock_driven: &[],
        volatile: &[],
        create_before_destroy: Cbd::Never,
    }
}

const K8S_OUT: &[&str] = &["id", "uid"];

/// Every kind slipway knows.
pub static KINDS: &[KindSpec] = &[
    kind("aws.vpc", &["cidr_block"], &["id"]),
    kind("aws.internet_gateway", &["vpc_id"], &["id"]),
    kind(
        "aws.subnet",
        &["vpc_id", "cidr_block", "availability_zone"],
        &["id", "arn"],
    ),
    kind("aws.eip", &["domain"], &["id", "public_ip"]),
    kind(
        "aws.eip_association",
        &["allocation_id", "instance_id"],
        &["id"],
    ),
    kind(
        "aws.nat_gateway",
        &["subnet_id", "allocation_id", "connectivity_type"],
        &["id"],
    ),
    kind("aws.route_table", &["vpc_id"], &["id"]),
    kind(
        "aws.route",
        &["route_table_id", "destination_cidr_block"],
        &["id"],
    ),
    kind("aws.route_table_association", &["subnet_id"], &["id"]),
    // A group in use (by instances, by other groups' rules) cannot be
    // deleted: under a new name the replacement comes first, the users move
    // over, then the old one goes.
    KindSpec {
        key: "aws.security_group",
        force_new: &["name", "description", "vpc_id"],
        outputs: &["id", "arn"],
        sensitive: &[],
        changed_by_update: &[],
        clock_driven: &[],
        volatile: &[],
        create_before_destroy: Cbd::WhenChanged(&["name"]),
    },
    kind(
        "aws.security_group_rule",
        &["security_group_id", "type"],
        &["id"],
    ),
    kind(
        "aws.iam_role",
        &["name", "path"],
        &["id", "arn", "unique_id"],
    ),
    kind(
        "aws.iam_role_policy_attachment",
        &["role", "policy_arn"],
        &["id"],
    ),
    kind("aws.iam_role_policy", &["role", "name"], &["id"]),
    kind(
        "aws.iam_instance_profile",
        &["name", "path"],
        &["id", "arn"],
    ),
    // `issuer_host` is the issuer URL without `https://`: IRSA trust
    // policies key their conditions by it. `thumbprint_list` is what slipway
    // obtained from the issuer when it registered it.
    kind(
        "aws.iam_openid_connect_provider",
        &["url"],
        &["id", "arn", "issuer_host", "thumbprint_list"],
    ),
    kind(
        "aws.iam_policy",
        &["name", "path", "description"],
        &["id", "arn"],
    ),
    KindSpec {
        key: "aws.instance",
        force_new: &[
            "ami_parameter",
            "subnet_id",
            "user_data",
            "root_volume_encrypted",
            "key_name",
        ],
        outputs: &["id", "ami", "private_ip", "public_ip", "public_dns"],
        sensitive: &[],
        // A new instance type means a stop and start: a new public address.
        changed_by_update: &["public_ip", "public_dns"],
        clock_driven: &[],
        // The root volume's id is bookkeeping (discovery knows the volume
        // as part of the instance), recorded by slipway since issue 15:
        // a root-volume replacement task changes it, a state written before
        // has none, neither is drift.
        volatile: &["public_ip", "public_dns", "root_volume_id"],
        create_before_destroy: Cbd::Never,
    },
    kind(
        "aws.ebs_volume",
        &[
            "availability_zone",
            "volume_type",
            "encrypted",
            "kms_key_id",
        ],
        &["id"],
    ),
    kind(
        "aws.volume_attachment",
        &["volume_id", "instance_id", "device_name"],
        &["id"],
    ),
    kind(
        "aws.ecr_repository",
        &["name", "encryption_type"],
        &["id", "arn", "registry_id", "repository_url"],
    ),
    kind("aws.ecr_lifecycle_policy", &["repository"], &["id"]),
    kind(
        "aws.eks_cluster",
        &["name", "role_arn", "subnet_ids"],
        &[
            "id",
            "arn",
            "endpoint",
            "certificate_authority",
            "oidc_issuer",
            "cluster_security_group_id",
        ],
    ),
    kind(
        "aws.eks_fargate_profile",
        &[
            "cluster_name",
            "name",
            "pod_execution_role_arn",
            "subnet_ids",
            "selectors",
        ],
        &["id", "arn"],
    ),
    kind(
        "aws.eks_access_entry",
        &["cluster_name", "principal_arn", "type"],
        &["id", "arn"],
    ),
    kind("k8s.namespace", &[], K8S_OUT),
    kind("k8s.deployment_patch", &[], K8S_OUT),
    kind("k8s.service_account", &[], K8S_OUT),
    kind("k8s.role", &[], K8S_OUT),
    // `roleRef` and a Deployment's `spec.selector` are immutable in the
    // Kubernetes API: changing them means a new object.
    kind("k8s.role_binding", &["manifest/roleRef"], K8S_OUT),
    kind("k8s.cluster_role", &[], K8S_OUT),
    kind("k8s.cluster_role_binding", &["manifest/roleRef"], K8S_OUT),
    kind("k8s.crd", &[], K8S_OUT),
    KindSpec {
        key: "k8s.secret",
        force_new: &[],
        outputs: K8S_OUT,
        sensitive: &["manifest"],
        changed_by_update: &[],
        clock_driven: &[],
        volatile: &[],
        create_before_destroy: Cbd::Never,
    },
    kind("k8s.service", &[], K8S_OUT),
    kind("k8s.deployment", &["manifest/spec/selector"], K8S_OUT),
    kind("k8s.mutating_webhook_configuration", &[], K8S_OUT),
    kind("k8s.validating_webhook_configuration", &[], K8S_OUT),
    kind("k8s.ingress_class", &[], K8S_OUT),
    kind("k8s.ingress_class_params", &[], K8S_OUT),
    KindSpec {
        key: "tls.certificate",
        force_new: &["common_name", "dns_names", "validity_days"],
        outputs: TLS_OUT,
        sensitive: &["key_pem", "key_pem_base64", "ca_key_pem"],
        // A renewal (`renewal_due` back to false) is an update that makes
        // every output anew.
        changed_by_update: TLS_OUT,
        clock_driven: &["renewal_due"],
        volatile: &[],
        create_before_destroy: Cbd::Never,
    },
];

/// The spec of a kind key like `aws.subnet`.
pub fn spec_opt(key: &str) -> Option<&'static KindSpec> {
    KINDS.iter().find(|k| k.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for k in KINDS {
            assert!(seen.insert(k.key), "duplicate kind {}", k.key);
            let addr = format!("{}.x", k.key);
            assert!(addr.parse::<crate::addr::Address>().is_ok(), "{addr}");
            assert!(k.outputs.contains(&"id"), "{} has no id output", k.key);
            for f in k.force_new {
                assert!(
                    !k.outputs.contains(f),
                    "{}: {f} is both input and output",
                    k.key
                );
            }
        }
        assert!(spec_opt("aws.subnet").is_some());
        assert!(spec_opt("aws.nope").is_none());
    }
}

#[cfg(test)]
mod served {
    /// Every catalogued kind has a provider that manages it.
    #[test]
    fn every_kind_is_served() {
        for k in super::KINDS {
            let served = crate::provider::aws::KINDS.contains(&k.key)
                || k.key.starts_with("k8s.")
                || k.key.starts_with("tls.");
            assert!(served, "no provider manages `{}`", k.key);
        }
    }
}
