//! The promotion policy: the branch rules of the original pipeline
//! (`master` takes only what went through `staging`, `staging` only what
//! went through `develop`) as a pure function of the stack, the release
//! histories and a digest.

use std::collections::BTreeMap;

use super::history::{Outcome, Release};
use crate::stack::Environment;

/// Why a digest may go into an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// The environment takes any build.
    Unrestricted,
    /// This release of the upstream environment vouches for the digest.
    Verified {
        environment: String,
        revision: u64,
        soaked_secs: i64,
    },
}

/// Checks that `digest` may go into `target`: when it has `promote_from`,
/// only a digest with a verified, succeeded release there (that ran there
/// at least `min_soak`, when set). The refusal says where the digest has
/// and has not been.
pub fn check(
    target: &Environment,
    environments: &[Environment],
    histories: &BTreeMap<String, Vec<Release>>,
    digest: &str,
    now: i64,
) -> Result<Allowed, String> {
    let Some(upstream) = target.promote_from() else {
        return Ok(Allowed::Unrestricted);
    };
    let empty = Vec::new();
    let history = histories.get(upstream).unwrap_or(&empty);
    let min_soak = target.min_soak().map_or(0, |d| d.as_secs() as i64);
    let mut best: Option<(u64, i64)> = None;
    // Only the digest's newest release upstream speaks for it: one that was
    // rolled back, or failed when deployed again, vouches for nothing.
    let newest = history.iter().rposition(|r| r.digest == digest);
    for (i, r) in history.iter().enumerate() {
        if Some(i) != newest || r.result != Outcome::Succeeded || !r.verified {
            continue;
        }
        let Some(done) = r
            .finished_at
            .as_deref()
            .and_then(crate::clock::parse_rfc3339_opt)
        else {
            continue;
        };
        // It ran until the next release there started, or runs still.
        let until = history[i + 1..]
            .iter()
            .find(|n| n.result == Outcome::Succeeded)
            .and_then(|n| crate::clock::parse_rfc3339_opt(&n.started_at))
            .unwrap_or(now);
        let soaked = until - done;
        if best.is_none_or(|(_, s)| soaked > s) {
            best = Some((r.revision, soaked));
        }
    }
    match best {
        Some((revision, soaked)) if soaked >= min_soak => Ok(Allowed::Verified {
            environment: upstream.to_string(),
            revision,
            soaked_secs: soaked,
        }),
        Some((revision, soaked)) => Err(format!(
            "environment `{}` takes only digests that ran verified in `{upstream}` for at least {}; `{digest}` has run there for {} (revision {revision})",
            target.name(),
            crate::clock::human_duration(min_soak),
            crate::clock::human_duration(soaked)
        )),
        None => Err(format!(
            "environment `{}` takes only digests with a verified, succeeded release in `{upstream}`, and `{digest}` has none; {}",
            target.name(),
            whereabouts(environments, histories, digest)
        )),
    }
}

/// Where a digest has and has not been: `develop: revision 3 succeeded
/// (verified); green: never`.
pub fn whereabouts(
    environments: &[Environment],
    histories: &BTreeMap<String, Vec<Release>>,
    digest: &str,
) -> String {
    let parts: Vec<String> = environments
        .iter()
        .map(|e| {
            let seen: Vec<String> = histories
                .get(e.name())
                .into_iter()
                .flatten()
                .filter(|r| r.digest == digest)
                .map(|r| {
                    format!(
                        "revision {} {}{}",
                        r.revision,
                        r.result.as_str(),
                        if r.verified {
                            " (verified)"
                        } else {
                            " (not verified)"
                        }
                    )
                })
                .collect();
            if seen.is_empty() {
                format!("`{}`: never", e.name())
            } else {
                format!("`{}`: {}", e.name(), seen.join(", "))
            }
        })
        .collect();
    format!("where it has been: {}", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::history::Kind;
    use crate::stack::Stack;

    fn stack(extra: &str) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        for env in ["blue", "green", "develop"] {
            let o = dir.path().join("k8s").join(env);
            std::fs::create_dir_all(&o).unwrap();
            std::fs::write(o.join("kustomization.yaml"), "resources: []\n").unwrap();
        }
        let text = format!(
            r#"[stack]
name = "s"
region = "ap-south-1"
[jenkins]
master = {{ allowed_cidrs = ["203.0.113.0/24"] }}
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
overlay = "k8s/blue"
promote_from = "green"
{extra}
[environments.green]
branch = "staging"
namespace = "s-green"
overlay = "k8s/green"
promote_from = "develop"
[environments.develop]
branch = "develop"
namespace = "s-develop"
overlay = "k8s/develop"
"#
        );
        let path = dir.path().join("stack.toml");
        let s = Stack::parse(&path, &text).unwrap();
        std::mem::forget(dir);
        s
    }

    fn release(
        env: &str,
        rev: u64,
        digest: &str,
        result: Outcome,
        verified: bool,
        t: (i64, i64),
    ) -> Release {
        let at = |s: i64| {
            time::OffsetDateTime::from_unix_timestamp(s)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        Release {
            format_version: 1,
            revision: rev,
            environment: env.into(),
            kind: Kind::Deploy,
            digest: digest.into(),
            image: format!("r@{digest}"),
            tag: None,
            branch: None,
            commit: None,
            user: "u".into(),
            host: "h".into(),
            build_url: None,
            job_name: None,
            started_at: at(t.0),
            finished_at: Some(at(t.1)),
            result,
            verified,
            forced: false,
            reason: None,
            promoted_from: None,
            rollback_to: None,
            address: None,
            error: None,
        }
    }

    fn histories(rs: Vec<Release>) -> BTreeMap<String, Vec<Release>> {
        let mut m: BTreeMap<String, Vec<Release>> = BTreeMap::new();
        for r in rs {
            m.entry(r.environment.clone()).or_default().push(r);
        }
        m
    }

    #[test]
    fn only_digests_verified_upstream_go_further() {
        let s = stack("");
        let blue = s.environment_opt("blue").unwrap();
        let develop = s.environment_opt("develop").unwrap();
        let h = histories(vec![
            release("develop", 1, "sha256:a", Outcome::Succeeded, true, (0, 10)),
            release("green", 1, "sha256:a", Outcome::Succeeded, true, (20, 30)),
            release("green", 2, "sha256:b", Outcome::Failed, false, (40, 50)),
        ]);
        assert_eq!(
            check(develop, s.environments(), &h, "sha256:zzz", 100),
            Ok(Allowed::Unrestricted)
        );
        assert!(matches!(
            check(blue, s.environments(), &h, "sha256:a", 100),
            Ok(Allowed::Verified { revision: 1, .. })
        ));
        let e = check(blue, s.environments(), &h, "sha256:b", 100).unwrap_err();
        assert!(
            e.contains("`green`: revision 2 failed (not verified)"),
            "{e}"
        );
        assert!(e.contains("`develop`: never"), "{e}");
        let e = check(blue, s.environments(), &h, "sha256:c", 100).unwrap_err();
        assert!(
            e.contains("`blue`: never; `green`: never; `develop`: never"),
            "{e}"
        );
    }

    #[test]
    fn a_rolled_back_or_unverified_release_vouches_for_nothing() {
        let s = stack("");
        let blue = s.environment_opt("blue").unwrap();
        let h = histories(vec![
            release("green", 1, "sha256:a", Outcome::RolledBack, true, (0, 10)),
            release("green", 2, "sha256:b", Outcome::Succeeded, false, (20, 30)),
        ]);
        assert!(check(blue, s.environments(), &h, "sha256:a", 100).is_err());
        assert!(check(blue, s.environments(), &h, "sha256:b", 100).is_err());
        // An older success does not outweigh a later rollback of the same digest.
        let h = histories(vec![
            release("green", 1, "sha256:c", Outcome::Succeeded, true, (0, 10)),
            release("green", 2, "sha256:d", Outcome::Succeeded, true, (20, 30)),
            release("green", 3, "sha256:c", Outcome::RolledBack, true, (40, 50)),
        ]);
        assert!(check(blue, s.environments(), &h, "sha256:c", 100).is_err());
        assert!(check(blue, s.environments(), &h, "sha256:d", 100).is_ok());
    }

    #[test]
    fn min_soak_counts_until_the_next_release_upstream() {
        let s = stack("min_soak = \"1h\"");
        let blue = s.environment_opt("blue").unwrap();
        let h = histories(vec![
            release("green", 1, "sha256:a", Outcome::Succeeded, true, (0, 100)),
            release("green", 2, "sha256:b", Outcome::Succeeded, true, (200, 300)),
        ]);
        // a ran 100 s before b replaced it; b has run since 300.
        let e = check(blue, s.environments(), &h, "sha256:a", 10_000).unwrap_err();
        assert!(e.contains("at least 1h00m") && e.contains("1m40s"), "{e}");
        assert!(check(blue, s.environments(), &h, "sha256:b", 3_000).is_err());
        assert!(check(blue, s.environments(), &h, "sha256:b", 3_901).is_ok());
    }
}
