//! Every environment variable slipway reads, in one place.

/// Disables colour when set to anything (<https://no-color.org>).
pub const NO_COLOR: &str = "NO_COLOR";
/// Path of a kubeconfig to use instead of connecting through EKS.
pub const KUBECONFIG: &str = "SLIPWAY_KUBECONFIG";
/// Test-only: use the file-backed simulated cloud at this path instead of AWS
/// and Kubernetes. See docs/testing.md.
pub const FAKE_CLOUD: &str = "SLIPWAY_FAKE_CLOUD";

/// Test-only: which kinds the simulated cloud serves instead of the real
/// providers: a comma-separated list of kind prefixes (`k8s.,tls.`).
pub const FAKE_KINDS: &str = "SLIPWAY_FAKE_KINDS";

/// Without a terminal, how often (seconds) a long operation prints that it
/// is still going; default 30.
pub const PROGRESS_INTERVAL: &str = "SLIPWAY_PROGRESS_INTERVAL";

/// `SLIPWAY_PROGRESS_INTERVAL`, if set: whole or fractional seconds.
pub fn progress_interval_opt() -> Result<Option<std::time::Duration>, String> {
    let Some(v) = std::env::var(PROGRESS_INTERVAL)
        .ok()
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0)
        .map(|s| Some(std::time::Duration::from_secs_f64(s)))
        .ok_or_else(|| {
            format!("{PROGRESS_INTERVAL}=`{v}` is not a number of seconds (0 to 86400); using 30")
        })
}

/// The user running slipway, for lock records.
pub fn user_opt() -> Option<String> {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// True when `NO_COLOR` is set to a non-empty value.
pub fn no_color() -> bool {
    std::env::var_os(NO_COLOR).is_some_and(|v| !v.is_empty())
}

/// The simulated cloud's file, if one is selected.
pub fn fake_cloud_opt() -> Option<std::path::PathBuf> {
    std::env::var_os(FAKE_CLOUD)
        .filter(|v| !v.is_empty())
        .map(Into::into)
}

/// The kind prefixes the simulated cloud serves; `None`: every kind.
pub fn fake_kinds_opt() -> Option<Vec<String>> {
    let v = std::env::var(FAKE_KINDS).ok().filter(|v| !v.is_empty())?;
    Some(
        v.split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
    )
}

/// The kubectl that renders overlays (`kubectl kustomize`); default
/// `kubectl` on the `PATH`.
pub const KUBECTL: &str = "SLIPWAY_KUBECTL";

/// Jenkins sets these in every build; a release records them.
pub const BUILD_URL: &str = "BUILD_URL";
pub const JOB_NAME: &str = "JOB_NAME";

pub fn kubectl() -> String {
    std::env::var(KUBECTL)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "kubectl".to_string())
}

/// The Jenkins build URL and job name, when running in Jenkins.
pub fn jenkins_build_opt() -> (Option<String>, Option<String>) {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    (get(BUILD_URL), get(JOB_NAME))
}

/// The HTTP proxy for the HTTPS connection slipway makes itself (the EKS
/// OIDC issuer's thumbprint), upper-case name first, as the AWS SDK reads
/// them for the AWS API calls.
pub const HTTPS_PROXY: [&str; 2] = ["HTTPS_PROXY", "https_proxy"];
/// Hosts reached without that proxy: comma-separated domains (each also
/// matching its subdomains), IP addresses and networks; `*` for every host.
pub const NO_PROXY: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// `HTTPS_PROXY` (or `https_proxy`), if set to a non-empty value.
pub fn https_proxy_opt() -> Option<String> {
    first_set(&HTTPS_PROXY)
}

/// `NO_PROXY` (or `no_proxy`), if set to a non-empty value.
pub fn no_proxy_opt() -> Option<String> {
    first_set(&NO_PROXY)
}

fn first_set(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}
