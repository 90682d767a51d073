//! AWS Load Balancer Controller releases slipway can install, each pinned
//! with the IAM policy that matches it.

/// One supported controller release.
#[derive(Debug)]
pub struct Release {
    /// `2.8.2`.
    pub version: &'static str,
    /// The controller image.
    pub image: &'static str,
    /// Upstream `docs/install/iam_policy.json` at the release tag, verbatim.
    ///
    /// `None` would mean no document is embedded: unless the stack gives one
    /// with `[ingress] iam_policy_file`, the `aws.iam_policy.lb_controller`
    /// resource would have no `policy` and creating it would fail rather
    /// than guess. Embedding it is tracked as the
    /// "LBC IAM policy" gap in docs/stack.md.
    pub iam_policy: Option<&'static str>,
    /// Where the IAM policy comes from.
    pub iam_policy_source: &'static str,
}

/// Every supported release, oldest first.
pub static RELEASES: &[Release] = &[Release {
    version: "2.8.2",
    image: "public.ecr.aws/eks/aws-load-balancer-controller:v2.8.2",
    // Upstream's docs/install/iam_policy.json at v2.8.2, as packaged
    // verbatim in aws-cdk-lib 2.170.0 (aws-eks/lib/addons/alb-iam_policy-v2.8.2.json).
    iam_policy: Some(include_str!("lbc/v2.8.2/iam_policy.json")),
    iam_policy_source: "https://raw.githubusercontent.com/kubernetes-sigs/aws-load-balancer-controller/v2.8.2/docs/install/iam_policy.json",
}];

/// The release with this version, e.g. `2.8.2`.
pub fn release_opt(version: &str) -> Option<&'static Release> {
    RELEASES.iter().find(|r| r.version == version)
}
