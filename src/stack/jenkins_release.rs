//! What the Jenkins servers install, pinned in one place: the Jenkins LTS
//! release, its RPM repository's signing keys, every plugin's version, the
//! plugin manager and kubectl, each download with the SHA-256 it must have.
//! Upgrading Jenkins means changing this file deliberately (see
//! docs/jenkins.md), like the load balancer controller's releases.
//!
//! Where each value comes from is written beside it; docs/jenkins.md says
//! which were computed here and which are corroborated public pins.

/// The Jenkins LTS release (`dnf install jenkins-<version>`).
///
/// With the plugin versions below it is the set the Jenkins documentation
/// project's own tutorials pin together (`jenkins-docs/quickstart-tutorials`,
/// `dockerfiles/Dockerfile` and `dockerfiles/plugins.txt`, one commit).
pub const JENKINS_VERSION: &str = "2.479.1";

/// The Jenkins RPM repository (LTS releases).
pub const JENKINS_REPO_URL: &str = "https://pkg.jenkins.io/redhat-stable";

/// A key the repository's packages are signed with: where it is published
/// and the OpenPGP fingerprint it must have to be imported.
#[derive(Debug)]
pub struct SigningKey {
    pub url: &'static str,
    pub fingerprint: &'static str,
}

/// The key [`JENKINS_VERSION`]'s package is signed with, imported only when
/// its fingerprint is the pinned one. LTS releases up to 2.541 are signed
/// with the 2023 key; later ones with the 2026 key
/// (`https://pkg.jenkins.io/redhat-stable/jenkins.io-2026.key`,
/// `5E386EADB55F01504CAE8BCF7198F4B714ABFC68`): change both together.
pub const JENKINS_REPO_KEYS: &[SigningKey] = &[SigningKey {
    url: "https://pkg.jenkins.io/redhat-stable/jenkins.io-2023.key",
    fingerprint: "63667EE74BBA1F0A08A698725BA31D57EF5975CA",
}];

/// Every plugin the master installs, `(name, version)`. The JCasC and Job
/// DSL keys slipway writes need them; their dependencies are resolved at
/// the lowest versions these require (`--latest false`).
pub const PLUGINS: &[(&str, &str)] = &[
    ("configuration-as-code", "1887.v9e47623cb_043"),
    ("job-dsl", "1.90"),
    ("workflow-aggregator", "600.vb_57cdd26fdd7"),
    ("workflow-multibranch", "795.ve0cb_1f45ca_9a_"),
    ("branch-api", "2.1197.vfa_d0c47c267d"),
    ("git", "5.6.0"),
    ("ssh-slaves", "2.973.v0fa_8c0dea_f9f"),
    ("credentials", "1389.vd7a_b_f5fa_50a_2"),
    ("credentials-binding", "687.v619cb_15e923f"),
    ("multibranch-scan-webhook-trigger", "1.0.11"),
    ("job-restrictions", "209.va_a_55deb_3ef91"),
];

/// A release file and its SHA-256.
#[derive(Debug)]
pub struct Pinned {
    pub version: &'static str,
    pub sha256: &'static str,
}

/// The plugin installation manager. It checks every plugin it downloads
/// against the update center's SHA-256.
pub const PLUGIN_MANAGER: Pinned = Pinned {
    version: "2.15.0",
    sha256: "a86853ec2e2933f37a4b471ba65099b61e03c87a80c2ef8fe2315eb135672d43",
};

impl Pinned {
    /// The plugin manager's release download.
    pub fn url(&self) -> String {
        format!(
            "https://github.com/jenkinsci/plugin-installation-manager-tool/releases/download/{v}/jenkins-plugin-manager-{v}.jar",
            v = self.version
        )
    }
}

/// The kubectl the agents install for one Kubernetes minor version.
#[derive(Debug)]
pub struct Kubectl {
    /// `1.31`: the cluster versions it serves.
    pub minor: &'static str,
    /// `v1.31.9`.
    pub version: &'static str,
    pub amd64_sha256: &'static str,
    pub arm64_sha256: &'static str,
}

impl Kubectl {
    /// The official binary for `arch` (`amd64`, `arm64`).
    pub fn url(&self, arch: &str) -> String {
        format!(
            "https://dl.k8s.io/release/{}/bin/linux/{arch}/kubectl",
            self.version
        )
    }
}

/// One kubectl per supported cluster version, oldest first.
pub static KUBECTL: &[Kubectl] = &[
    Kubectl {
        minor: "1.29",
        version: "v1.29.4",
        amd64_sha256: "10e343861c3cb0010161e703307ba907add2aeeeaffc6444779ad915f9889c88",
        arm64_sha256: "61537408eedcad064d7334384aed508a8aa1ea786311b87b505456a2e0535d36",
    },
    Kubectl {
        minor: "1.30",
        version: "v1.30.0",
        amd64_sha256: "7c3807c0f5c1b30110a2ff1e55da1d112a6d0096201f1beb81b269f582b5d1c5",
        arm64_sha256: "669af0cf520757298ea60a8b6eb6b719ba443a9c7d35f36d3fb2fd7513e8c7d2",
    },
    Kubectl {
        minor: "1.31",
        version: "v1.31.9",
        amd64_sha256: "720d31a15368ad56993c127a7d4fa2688a8520029c2e6be86b1a877ad6f92624",
        arm64_sha256: "1e6de599df408824f13602d73333c08c3528cfa5d6c8c98c633868a966882129",
    },
    Kubectl {
        minor: "1.32",
        version: "v1.32.3",
        amd64_sha256: "ab209d0c5134b61486a0486585604a616a5bb2fc07df46d304b3c95817b2d79f",
        arm64_sha256: "6c2c91e760efbf3fa111a5f0b99ba8975fb1c58bb3974eca88b6134bcf3717e2",
    },
];

/// The kubectl for a cluster version (`1.31`): the one pinned for that
/// version, else the nearest within one minor version (kubectl supports
/// a cluster one minor older or newer than itself); none beyond that.
pub fn kubectl(cluster_version: &str) -> Option<&'static Kubectl> {
    let minor = |v: &str| v.strip_prefix("1.").and_then(|m| m.parse::<i64>().ok());
    let want = minor(cluster_version)?;
    KUBECTL
        .iter()
        .filter_map(|k| Some((minor(k.minor)?, k)))
        .filter(|(m, _)| (m - want).abs() <= 1)
        .min_by_key(|(m, _)| ((m - want).abs(), -m))
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex64(s: &str) -> bool {
        s.len() == 64
            && s.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    }

    #[test]
    fn every_pin_is_well_formed_and_listed_once() {
        assert!(hex64(PLUGIN_MANAGER.sha256));
        for k in KUBECTL {
            assert!(hex64(k.amd64_sha256) && hex64(k.arm64_sha256), "{k:?}");
            assert!(k.version.starts_with(&format!("v{}.", k.minor)), "{k:?}");
        }
        for key in JENKINS_REPO_KEYS {
            assert_eq!(key.fingerprint.len(), 40);
            assert!(key.url.starts_with(JENKINS_REPO_URL));
        }
        let mut names: Vec<&str> = PLUGINS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PLUGINS.len(), "a plugin is pinned twice");
        assert_eq!(kubectl("1.31").map(|k| k.version), Some("v1.31.9"));
        // Within kubectl's one-minor skew, the nearest pin serves.
        assert_eq!(kubectl("1.28").map(|k| k.version), Some("v1.29.4"));
        assert_eq!(kubectl("1.33").map(|k| k.version), Some("v1.32.3"));
        assert!(kubectl("1.34").is_none());
        assert!(kubectl("1.99").is_none());
    }
}
