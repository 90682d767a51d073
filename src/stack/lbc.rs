//! AWS Load Balancer Controller releases slipway can install, each pinned
//! with the IAM policy and the Kubernetes objects that match it: upgrading
//! `controller_version` changes both together.

mod v2_8_2;

use serde_json::Value;

/// One supported controller release.
#[derive(Debug)]
pub struct Release {
    /// `2.8.2`.
    pub version: &'static str,
    /// The controller image.
    pub image: &'static str,
    /// Upstream `docs/install/iam_policy.json` at the release tag, verbatim.
    ///
    /// `None` means no document is embedded: the stack must then give one
    /// with `[ingress] iam_policy_file` (validation says so).
    pub iam_policy: Option<&'static str>,
    /// Where the IAM policy comes from.
    pub iam_policy_source: &'static str,
    /// The version-specific parts of the controller's Kubernetes objects.
    pub manifests: &'static Manifests,
}

/// What a release's Helm chart renders, minus what depends on the stack.
#[derive(Debug)]
pub struct Manifests {
    /// The chart these follow, e.g. `aws-load-balancer-controller-1.8.2`.
    pub chart: &'static str,
    /// The controller's ClusterRole rules.
    pub cluster_role_rules: fn() -> Value,
    /// The leader-election Role's rules (in `kube-system`).
    pub leader_election_rules: fn() -> Value,
    /// The controller's CRDs, group `elbv2.k8s.aws`.
    pub crds: fn() -> Vec<Crd>,
    /// Deployment spec fields besides selector and template.
    pub deployment: fn() -> Value,
    /// Pod spec fields besides the service account, volumes and containers.
    pub pod: fn() -> Value,
    /// Container fields besides name, image and args.
    pub container: fn() -> Value,
    /// `admissionReviewVersions` of every webhook.
    pub admission_review_versions: &'static [&'static str],
    /// The MutatingWebhookConfiguration's webhooks.
    pub mutating_webhooks: fn() -> Vec<Webhook>,
    /// The ValidatingWebhookConfiguration's webhooks.
    pub validating_webhooks: fn() -> Vec<Webhook>,
}

/// One CustomResourceDefinition.
#[derive(Debug)]
pub struct Crd {
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    /// `Cluster` or `Namespaced`.
    pub scope: &'static str,
    /// `spec.versions`.
    pub versions: Value,
}

/// One webhook served by the controller's webhook service.
#[derive(Debug)]
pub struct Webhook {
    pub name: &'static str,
    /// The path on the webhook service.
    pub path: &'static str,
    /// Everything else: rules, selectors, match policy.
    pub rest: Value,
}

/// Every supported release, oldest first.
pub static RELEASES: &[Release] = &[Release {
    version: "2.8.2",
    image: "public.ecr.aws/eks/aws-load-balancer-controller:v2.8.2",
    // Upstream's docs/install/iam_policy.json at v2.8.2, as packaged
    // verbatim in aws-cdk-lib 2.170.0 (aws-eks/lib/addons/alb-iam_policy-v2.8.2.json).
    iam_policy: Some(include_str!("lbc/v2.8.2/iam_policy.json")),
    iam_policy_source: "https://raw.githubusercontent.com/kubernetes-sigs/aws-load-balancer-controller/v2.8.2/docs/install/iam_policy.json",
    manifests: &v2_8_2::MANIFESTS,
}];

/// The release with this version, e.g. `2.8.2`.
pub fn release_opt(version: &str) -> Option<&'static Release> {
    RELEASES.iter().find(|r| r.version == version)
}
