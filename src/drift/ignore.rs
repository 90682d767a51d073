//! Accepted drift: `--ignore PATTERN` and the stack's `[drift] ignore`.
//!
//! A pattern is an address glob, optionally followed by `:` and an
//! attribute path glob: `aws.instance.jenkins_agent_*:tags.LastPatched`,
//! `k8s.*`, `aws.security_group.jenkins_master:rules`. `*` matches any run
//! of characters, `?` one. A path matches the path itself and everything
//! under it (`tags` covers `tags.Owner`). Without a path, every finding for
//! a matching address is accepted; with one, only modifications and extra
//! members at that path.

use super::Finding;

/// One accepted-drift pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    address: String,
    path: Option<String>,
}

impl std::str::FromStr for Pattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (address, path) = match s.split_once(':') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        if address.is_empty() {
            return Err(format!(
                "`{s}` is not a drift pattern: it needs an address glob before any `:`, e.g. `aws.instance.*:tags.Owner`"
            ));
        }
        if address.split('.').count() < 2 && address != "*" {
            return Err(format!(
                "`{s}` is not a drift pattern: `{address}` matches no address (`DOMAIN.KIND.NAME`, with `*` and `?`)"
            ));
        }
        if path.is_some_and(str::is_empty) {
            return Err(format!(
                "`{s}` is not a drift pattern: the attribute path after `:` is empty"
            ));
        }
        Ok(Pattern {
            text: s.to_string(),
            address: address.to_string(),
            path: path.map(str::to_string),
        })
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Pattern {
    pub fn matches(&self, finding: &Finding) -> bool {
        if !glob(&self.address, &finding.address.to_string()) {
            return false;
        }
        match (&self.path, &finding.path) {
            (None, _) => true,
            (Some(p), Some(fp)) => path_matches(p, fp),
            (Some(_), None) => false,
        }
    }
}

/// Marks each finding a pattern accepts with the first such pattern.
pub fn apply(findings: &mut [Finding], patterns: &[Pattern]) {
    for f in findings {
        if let Some(p) = patterns.iter().find(|p| p.matches(f)) {
            f.ignored_by = Some(p.to_string());
        }
    }
}

/// The path, or any part of it ending at a step (`tags` of `tags.Owner`,
/// `manifest.spec` of `manifest.spec.replicas`), matches.
fn path_matches(pattern: &str, path: &str) -> bool {
    path.char_indices()
        .filter(|(_, c)| matches!(c, '.' | '['))
        .map(|(i, _)| &path[..i])
        .chain(std::iter::once(path))
        .any(|prefix| glob(pattern, prefix))
}

/// `*` matches any run of characters, `?` any one; the rest literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::FindingKind;

    fn finding(kind: FindingKind, addr: &str, path: Option<&str>) -> Finding {
        Finding {
            kind,
            address: addr.parse().unwrap(),
            id: None,
            path: path.map(str::to_string),
            recorded: None,
            live: None,
            ids: Vec::new(),
            detail: None,
            ignored_by: None,
        }
    }

    #[test]
    fn globs() {
        assert!(glob("aws.instance.*", "aws.instance.jenkins_agent_1"));
        assert!(glob("*", "k8s.namespace.x"));
        assert!(glob("aws.*.main", "aws.vpc.main"));
        assert!(glob("aws.instance.agent_?", "aws.instance.agent_1"));
        assert!(!glob("aws.instance.agent_?", "aws.instance.agent_10"));
        assert!(!glob("aws.vpc.*", "aws.subnet.a"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
    }

    #[test]
    fn a_path_covers_what_is_under_it_and_needs_a_path_to_match() {
        let p: Pattern = "aws.instance.*:tags".parse().unwrap();
        let m = |path| {
            p.matches(&finding(
                FindingKind::Modified,
                "aws.instance.agent_1",
                path,
            ))
        };
        assert!(m(Some("tags")));
        assert!(m(Some("tags.LastPatched")));
        assert!(m(Some("tags[\"a.b\"]")));
        assert!(!m(Some("tagsx")));
        assert!(!m(Some("instance_type")));
        assert!(!p.matches(&finding(FindingKind::Deleted, "aws.instance.agent_1", None)));
        let whole: Pattern = "aws.instance.agent_1".parse().unwrap();
        assert!(whole.matches(&finding(FindingKind::Deleted, "aws.instance.agent_1", None)));
        let deep: Pattern = "k8s.*:manifest.spec.*.image".parse().unwrap();
        // `*` crosses steps.
        assert!(deep.matches(&finding(
            FindingKind::Modified,
            "k8s.deployment.ns/app",
            Some("manifest.spec.template.spec.containers[0].image")
        )));
        assert!(!deep.matches(&finding(
            FindingKind::Modified,
            "k8s.deployment.ns/app",
            Some("manifest.spec.replicas")
        )));
    }

    #[test]
    fn bad_patterns_say_why() {
        for bad in ["", ":tags", "instance", "aws.vpc.main:"] {
            let e = bad.parse::<Pattern>().unwrap_err();
            assert!(e.contains("not a drift pattern"), "{e}");
        }
    }

    #[test]
    fn the_first_matching_pattern_is_recorded() {
        let mut f = vec![
            finding(FindingKind::Modified, "aws.vpc.main", Some("tags.Owner")),
            finding(FindingKind::Deleted, "aws.subnet.a", None),
        ];
        let patterns: Vec<Pattern> = ["aws.vpc.*:tags", "aws.vpc.main"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        apply(&mut f, &patterns);
        assert_eq!(f[0].ignored_by.as_deref(), Some("aws.vpc.*:tags"));
        assert!(!f[1].ignored());
    }
}
