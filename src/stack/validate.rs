//! Schema structs to the validated model: every rule that needs no network.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use toml::Spanned;

use super::diag::Sink;
use super::lbc::{self, Release};
use super::parse::RawDocument;
use super::schema::{RawCluster, RawJenkins, RawNetwork, RawRegistry, S, Strings};
use super::{Cluster, Download, Environment, Jenkins, Network, Registry};

/// AWS allows at most 50 tags per resource; slipway sets up to five itself
/// (`Name`, `slipway:stack`, `slipway:address` and the two Kubernetes subnet tags).
pub(super) const MAX_USER_TAGS: usize = 45;
const RESERVED_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease", "default"];
const LOG_TYPES: &[&str] = &[
    "api",
    "audit",
    "authenticator",
    "controllerManager",
    "scheduler",
];
/// The oldest Kubernetes minor version EKS still offers (standard or extended support).
const OLDEST_EKS_MINOR: u32 = 28;
pub(super) const DEFAULT_AMI_PARAMETER: &str =
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";

/// Everything `Stack` holds apart from its path and hash.
pub(super) struct Model {
    pub name: String,
    pub region: String,
    pub tags: BTreeMap<String, String>,
    pub network: Network,
    pub jenkins: Jenkins,
    pub registry: Registry,
    pub cluster: Cluster,
    pub ingress: &'static Release,
    /// The controller's IAM policy document: from `iam_policy_file`, else
    /// the one embedded for the release, if any.
    pub ingress_policy: Option<serde_json::Value>,
    pub environments: Vec<Environment>,
    /// `[drift] ignore`: accepted drift.
    pub drift_ignore: Vec<crate::drift::ignore::Pattern>,
    /// `[state]`: where the state lives.
    pub state: super::StateBackend,
}

/// Checks the parsed document; `None` when anything was reported.
pub(super) fn validate(sink: &mut Sink<'_>, doc: RawDocument, stack_path: &Path) -> Option<Model> {
    let root = project_root(stack_path);
    let (name, region, tags) = match doc.stack {
        Some(s) => {
            check_stack_name(sink, &s.name);
            check_region(sink, &s.region);
            let tags = check_tags(sink, s.tags.as_ref());
            (
                Some(s.name.into_inner()),
                Some(s.region.into_inner()),
                Some(tags),
            )
        }
        None => (None, None, None),
    };
    let network = network(sink, doc.network.unwrap_or_default());
    let jenkins = doc.jenkins.map(|j| jenkins(sink, j));
    let registry = doc.registry.map(|r| registry(sink, r));
    let quota_span = doc
        .cluster
        .as_ref()
        .and_then(|c| c.fargate_profile_quota.as_ref())
        .map(|q| q.span());
    let cluster = doc
        .cluster
        .map(|c| cluster(sink, c, region.as_deref(), name.as_deref()));
    let ingress_policy =
        doc.ingress.as_ref().and_then(|i| {
            let Some(file) = &i.iam_policy_file else {
                let release = lbc::release_opt(i.controller_version.get_ref())?;
                return release
                    .iam_policy
                    .and_then(|d| serde_json::from_str(d).ok());
            };
            let path = root.join(file.get_ref());
            let text =
                match std::fs::read_to_string(&path) {
                    Ok(t) => t,
                    Err(e) => {
                        sink.err(
                    &file.span(),
                    format!("cannot read the controller IAM policy `{}`: {e}", path.display()),
                    "the path is relative to the project directory (the parent of `stacks/`)",
                );
                        return None;
                    }
                };
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v) if v.get("Statement").is_some() => Some(v),
                Ok(_) => {
                    sink.err(
                        &file.span(),
                        format!(
                            "`{}` is not an IAM policy document: it has no `Statement`",
                            path.display()
                        ),
                        "use the controller's `docs/install/iam_policy.json` for this version",
                    );
                    None
                }
                Err(e) => {
                    sink.err(
                        &file.span(),
                        format!("`{}` is not valid JSON: {e}", path.display()),
                        "use the controller's `docs/install/iam_policy.json` for this version",
                    );
                    None
                }
            }
        });
    let ingress = doc.ingress.and_then(|i| {
        let v = &i.controller_version;
        let found = lbc::release_opt(v.get_ref());
        if found.is_none() {
            sink.err(
                &v.span(),
                format!(
                    "AWS Load Balancer Controller version `{}` is not supported",
                    v.get_ref()
                ),
                format!(
                    "use one of {}; each version is pinned with its IAM policy",
                    backticked(lbc::RELEASES.iter().map(|r| r.version))
                ),
            );
        }
        found
    });
    let environments = environments(
        sink,
        &doc.environments,
        doc.environments_span.as_ref(),
        &root,
    );
    if let Some(c) = &cluster {
        fargate_profiles_within_quota(sink, &doc.environments, c, quota_span);
    }
    let drift_ignore = drift_ignore(sink, doc.drift.as_ref());
    let state = state_backend(sink, doc.state.as_ref(), name.as_deref(), region.as_deref());
    if !sink.is_empty() {
        return None;
    }
    Some(Model {
        name: name?,
        region: region?,
        tags: tags?,
        network: network?,
        jenkins: jenkins?,
        registry: registry?,
        cluster: cluster?,
        ingress: ingress?,
        ingress_policy,
        environments,
        drift_ignore,
        state,
    })
}

/// `[state]`: the local backend unless `backend = "s3"`, which needs a bucket.
fn state_backend(
    sink: &mut Sink<'_>,
    raw: Option<&super::schema::RawState>,
    stack: Option<&str>,
    region: Option<&str>,
) -> super::StateBackend {
    let Some(raw) = raw else {
        return super::StateBackend::Local;
    };
    let s3_only = [
        ("bucket", raw.bucket.as_ref()),
        ("key", raw.key.as_ref()),
        ("region", raw.region.as_ref()),
        ("kms_key_id", raw.kms_key_id.as_ref()),
    ];
    match raw.backend.as_ref().map(|b| b.get_ref().as_str()) {
        None | Some("local") => {
            for (name, v) in s3_only {
                if let Some(v) = v {
                    sink.err(
                        &v.span(),
                        format!("`{name}` is for the S3 backend, and this stack's state is local"),
                        "add `backend = \"s3\"` to `[state]`, or remove the key",
                    );
                }
            }
            super::StateBackend::Local
        }
        Some("s3") => {
            let Some(bucket) = &raw.bucket else {
                if let Some(b) = &raw.backend {
                    sink.err(
                        &b.span(),
                        "`backend = \"s3\"` needs `bucket`".to_string(),
                        "add `bucket = \"NAME\"` (`slipway state init-backend` creates it)",
                    );
                }
                return super::StateBackend::Local;
            };
            let name = bucket.get_ref();
            let valid = (3..=63).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
                && name.starts_with(|c: char| c.is_ascii_alphanumeric())
                && name.ends_with(|c: char| c.is_ascii_alphanumeric())
                && !name.contains("..");
            if !valid {
                sink.err(
                    &bucket.span(),
                    format!("`{name}` is not an S3 bucket name"),
                    "use 3 to 63 lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit",
                );
            }
            let key = match &raw.key {
                Some(k) => {
                    let key = k.get_ref();
                    if key.is_empty()
                        || key.starts_with('/')
                        || key.len() > 1000
                        || key.ends_with(".lock")
                    {
                        sink.err(
                            &k.span(),
                            format!("`{key}` is not a state object key slipway can use"),
                            "write a key like `team/smallcase.state.json`: not empty, no leading `/`, not ending in `.lock`",
                        );
                    }
                    key.clone()
                }
                None => format!("{}/slipway.state.json", stack.unwrap_or("stack")),
            };
            super::StateBackend::S3(crate::state::s3::S3Location {
                bucket: name.clone(),
                key,
                region: raw
                    .region
                    .as_ref()
                    .map(|r| r.get_ref().clone())
                    .or_else(|| region.map(str::to_string))
                    .unwrap_or_default(),
                kms_key_id: raw.kms_key_id.as_ref().map(|k| k.get_ref().clone()),
            })
        }
        Some(other) => {
            if let Some(b) = &raw.backend {
                sink.err(
                    &b.span(),
                    format!("`{other}` is not a state backend"),
                    "use `\"local\"` (the default) or `\"s3\"`",
                );
            }
            super::StateBackend::Local
        }
    }
}

/// `[drift] ignore`: each entry a pattern, reported where it is written.
fn drift_ignore(
    sink: &mut Sink<'_>,
    raw: Option<&super::schema::RawDrift>,
) -> Vec<crate::drift::ignore::Pattern> {
    let mut out = Vec::new();
    for p in raw
        .and_then(|d| d.ignore.as_ref())
        .map(|l| l.get_ref().as_slice())
        .unwrap_or_default()
    {
        match p.get_ref().parse() {
            Ok(pattern) => out.push(pattern),
            Err(e) => sink.err(
                &p.span(),
                e,
                "write `ADDRESS_GLOB` or `ADDRESS_GLOB:attribute.path`, e.g. `aws.instance.jenkins_agent_*:tags.LastPatched`; see docs/drift.md",
            ),
        }
    }
    out
}

/// The directory overlay paths are relative to: the parent of the `stacks/`
/// directory holding the stack file, else the stack file's own directory.
pub(super) fn project_root(stack_path: &Path) -> PathBuf {
    let dir = stack_path.parent().unwrap_or(Path::new(""));
    if dir.file_name().is_some_and(|n| n == "stacks") {
        dir.parent().unwrap_or(Path::new("")).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

fn backticked<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items
        .into_iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_stack_name(sink: &mut Sink<'_>, name: &S<String>) {
    let n = name.get_ref();
    let ok = (1..=32).contains(&n.len())
        && n.starts_with(|c: char| c.is_ascii_lowercase())
        && !n.ends_with('-')
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        sink.err(
            &name.span(),
            format!("stack name `{n}` is not usable in AWS resource names"),
            "use 1 to 32 lowercase letters, digits and `-`, starting with a letter and not ending with `-`",
        );
    }
}

fn check_region(sink: &mut Sink<'_>, region: &S<String>) {
    let r = region.get_ref();
    let parts: Vec<&str> = r.split('-').collect();
    let ok = (3..=4).contains(&parts.len())
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1]
            .parse::<u8>()
            .is_ok_and(|n| n > 0 && !parts[parts.len() - 1].starts_with('0'));
    if !ok {
        sink.err(
            &region.span(),
            format!("`{r}` is not an AWS region name"),
            "write a region code like `ap-south-1` or `us-east-1`",
        );
    }
}

fn check_tags(
    sink: &mut Sink<'_>,
    tags: Option<&S<BTreeMap<S<String>, S<String>>>>,
) -> BTreeMap<String, String> {
    let Some(tags) = tags else {
        return BTreeMap::new();
    };
    if tags.get_ref().len() > MAX_USER_TAGS {
        sink.err(
            &tags.span(),
            format!(
                "`[stack] tags` has {} tags, AWS allows {MAX_USER_TAGS} next to the ones slipway sets",
                tags.get_ref().len()
            ),
            "drop some tags",
        );
    }
    let allowed_char = |c: char| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c);
    for (k, v) in tags.get_ref() {
        let key = k.get_ref();
        if key.is_empty() || key.chars().count() > 128 || !key.chars().all(allowed_char) {
            sink.err(
                &k.span(),
                format!("tag key `{key}` is not a valid AWS tag key"),
                "use 1 to 128 letters, digits, spaces and `_ . : / = + - @`",
            );
        } else if key.to_ascii_lowercase().starts_with("aws:") {
            sink.err(
                &k.span(),
                format!("tag key `{key}` uses the `aws:` prefix, which AWS reserves"),
                "choose a key without the `aws:` prefix",
            );
        } else if key.starts_with("slipway:") || key == "Name" {
            sink.err(
                &k.span(),
                format!("tag key `{key}` is set by slipway on every resource"),
                "remove it; slipway sets `Name`, `slipway:stack` and `slipway:address` itself",
            );
        }
        let value = v.get_ref();
        if value.chars().count() > 256 || !value.chars().all(allowed_char) {
            sink.err(
                &v.span(),
                format!("tag value for `{key}` is not a valid AWS tag value"),
                "use at most 256 letters, digits, spaces and `_ . : / = + - @`",
            );
        }
    }
    tags.get_ref()
        .iter()
        .map(|(k, v)| (k.get_ref().clone(), v.get_ref().clone()))
        .collect()
}

/// Parses a canonical IPv4 CIDR block, reporting why not.
fn cidr(sink: &mut Sink<'_>, s: &S<String>, what: &str) -> Option<Ipv4Net> {
    let text = s.get_ref();
    match text.parse::<Ipv4Net>() {
        Ok(net) if net.addr() != net.network() => {
            sink.err(
                &s.span(),
                format!("{what} `{text}` has host bits set"),
                format!("write the network address: `{}`", net.trunc()),
            );
            None
        }
        Ok(net) => Some(net),
        Err(_) => {
            let hint = if text.parse::<std::net::Ipv4Addr>().is_ok() {
                format!("write `{text}/32` for a single address")
            } else if text.contains(':') {
                "slipway supports IPv4 only; write a block like `10.0.0.0/16`".to_string()
            } else {
                "write an IPv4 CIDR block like `10.0.0.0/16`".to_string()
            };
            sink.err(
                &s.span(),
                format!("{what} `{text}` is not an IPv4 CIDR block"),
                hint,
            );
            None
        }
    }
}

fn int_in(
    sink: &mut Sink<'_>,
    v: Option<&S<i64>>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
    what: &str,
    why: &str,
) -> Option<i64> {
    let Some(v) = v else {
        return Some(default);
    };
    let n = *v.get_ref();
    if range.contains(&n) {
        Some(n)
    } else {
        sink.err(
            &v.span(),
            format!(
                "{what} `{n}` is out of range {}..={}",
                range.start(),
                range.end()
            ),
            format!("use a value from {} to {}{why}", range.start(), range.end()),
        );
        None
    }
}

fn network(sink: &mut Sink<'_>, raw: RawNetwork) -> Option<Network> {
    let vpc = match &raw.cidr {
        Some(s) => {
            let net = cidr(sink, s, "VPC CIDR")?;
            if !(16..=28).contains(&net.prefix_len()) {
                sink.err(
                    &s.span(),
                    format!(
                        "VPC CIDR `{net}` has prefix /{}, AWS allows /16 to /28",
                        net.prefix_len()
                    ),
                    "choose a block from /16 (65,536 addresses) to /28 (16)",
                );
                return None;
            }
            net
        }
        None => Ipv4Net::new(std::net::Ipv4Addr::new(10, 0, 0, 0), 16).ok()?,
    };
    let azs = int_in(
        sink,
        raw.azs.as_ref(),
        2,
        2..=6,
        "`azs`",
        "; EKS needs subnets in at least two availability zones",
    )?;
    let azs = usize::try_from(azs).ok()?;
    let (default_public, default_private) = match default_subnets(vpc, azs) {
        Some(d) => d,
        None => {
            if raw.public_subnets.is_none() || raw.private_subnets.is_none() {
                let at = raw.cidr.as_ref().map_or(0..0, Spanned::span);
                sink.err(
                    &at,
                    format!(
                        "VPC CIDR `{vpc}` is too small to carve {} subnets of at least /28",
                        2 * azs
                    ),
                    "widen the VPC CIDR or list `public_subnets` and `private_subnets` yourself",
                );
                return None;
            }
            (Vec::new(), Vec::new())
        }
    };
    let mut seen: Vec<(Ipv4Net, Range<usize>)> = Vec::new();
    let mut lists = Vec::new();
    for (list, defaults, key) in [
        (&raw.public_subnets, default_public, "public_subnets"),
        (&raw.private_subnets, default_private, "private_subnets"),
    ] {
        let Some(list) = list else {
            lists.push(Some(defaults));
            continue;
        };
        if list.get_ref().len() != azs {
            sink.err(
                &list.span(),
                format!(
                    "`{key}` lists {} subnets but `azs` is {azs}",
                    list.get_ref().len()
                ),
                format!("list exactly one subnet per availability zone ({azs})"),
            );
        }
        let mut nets = Vec::new();
        for s in list.get_ref() {
            let Some(net) = cidr(sink, s, "subnet") else {
                continue;
            };
            if !(16..=28).contains(&net.prefix_len()) {
                sink.err(
                    &s.span(),
                    format!(
                        "subnet `{net}` has prefix /{}, AWS allows /16 to /28",
                        net.prefix_len()
                    ),
                    "choose a block from /16 to /28",
                );
            } else if !vpc.contains(&net) {
                sink.err(
                    &s.span(),
                    format!("subnet `{net}` is outside the VPC CIDR `{vpc}`"),
                    "choose a subnet inside the VPC CIDR, or widen `cidr`",
                );
            } else if let Some((other, _)) = seen
                .iter()
                .find(|(o, _)| o.contains(&net.network()) || net.contains(&o.network()))
            {
                sink.err(
                    &s.span(),
                    format!("subnet `{net}` overlaps subnet `{other}`"),
                    "give every subnet its own address range",
                );
            }
            seen.push((net, s.span()));
            nets.push(net);
        }
        lists.push(Some(nets));
    }
    let private = lists.pop().flatten()?;
    let public = lists.pop().flatten()?;
    // Defaults may collide with an explicit list on the other side.
    if raw.public_subnets.is_some() != raw.private_subnets.is_some() {
        let (given, carved) = if raw.public_subnets.is_some() {
            (&public, &private)
        } else {
            (&private, &public)
        };
        for c in carved {
            if given
                .iter()
                .any(|g| g.contains(&c.network()) || c.contains(&g.network()))
            {
                let (key, span) = if let Some(l) = &raw.public_subnets {
                    ("private_subnets", l.span())
                } else {
                    ("public_subnets", raw.private_subnets.as_ref()?.span())
                };
                sink.err(
                    &span,
                    format!("these subnets overlap the default `{key}` (`{c}`)"),
                    format!("list `{key}` too, so that the two sets do not overlap"),
                );
                return None;
            }
        }
    }
    Some(Network {
        cidr: vpc,
        azs,
        public,
        private,
        nat: raw.nat.map(Spanned::into_inner).unwrap_or_default(),
    })
}

/// The default carving: the VPC split into equal blocks of /20 (or smaller
/// when the VPC is too small for `2 * azs` /20s); public subnets take the
/// first `azs` blocks, private subnets the next `azs`.
pub(super) fn default_subnets(vpc: Ipv4Net, azs: usize) -> Option<(Vec<Ipv4Net>, Vec<Ipv4Net>)> {
    let needed = 2 * azs;
    let bits = usize::BITS - (needed - 1).leading_zeros();
    let prefix = (vpc.prefix_len() + u8::try_from(bits).ok()?).max(20);
    if prefix > 28 {
        return None;
    }
    let blocks: Vec<Ipv4Net> = vpc.subnets(prefix).ok()?.take(needed).collect();
    if blocks.len() < needed {
        return None;
    }
    Some((blocks[..azs].to_vec(), blocks[azs..].to_vec()))
}

/// `family.size`, e.g. `t3.medium`, `m7i-flex.large`, `u-6tb1.metal`.
fn valid_instance_type(s: &str) -> bool {
    let Some((family, size)) = s.split_once('.') else {
        return false;
    };
    let part_ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('-')
            && !p.ends_with('-')
            && !p.contains("--")
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    part_ok(family)
        && part_ok(size)
        && family.starts_with(|c: char| c.is_ascii_lowercase())
        && family.chars().any(|c| c.is_ascii_digit())
}

fn instance_type(sink: &mut Sink<'_>, v: Option<&S<String>>, default: &str) -> String {
    let Some(v) = v else {
        return default.to_string();
    };
    if !valid_instance_type(v.get_ref()) {
        sink.err(
            &v.span(),
            format!("`{}` is not an EC2 instance type", v.get_ref()),
            "write `family.size` in lowercase, like `t3.medium` or `m7i-flex.large`",
        );
    }
    v.get_ref().clone()
}

fn cidr_list(sink: &mut Sink<'_>, list: &Strings, what: &str) -> Vec<Ipv4Net> {
    list.get_ref()
        .iter()
        .filter_map(|s| cidr(sink, s, what))
        .collect()
}

fn jenkins(sink: &mut Sink<'_>, raw: RawJenkins) -> Jenkins {
    let master = raw.master.get_ref();
    let allowed_cidrs = cidr_list(sink, &master.allowed_cidrs, "allowed CIDR");
    if master.allowed_cidrs.get_ref().is_empty() {
        sink.err(
            &master.allowed_cidrs.span(),
            "`allowed_cidrs` is empty, so nobody could reach Jenkins".to_string(),
            "list the networks that may reach Jenkins, e.g. `[\"203.0.113.0/24\"]` (`0.0.0.0/0` for everyone)",
        );
    }
    if let Some(k) = &master.key_name {
        let name = k.get_ref();
        if name.is_empty()
            || name.len() > 255
            || !name.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        {
            sink.err(
                &k.span(),
                format!("`{name}` is not an EC2 key pair name"),
                "use the name of an existing key pair: 1 to 255 ASCII characters",
            );
        }
    }
    let url = raw.repository_url.get_ref();
    if !valid_repository_url(url) {
        let hint = if url.starts_with("http://") {
            "use `https://`; Jenkins would send credentials in clear text"
        } else {
            "write an `https://`, `ssh://` or `git@host:path` URL"
        };
        sink.err(
            &raw.repository_url.span(),
            format!("`{url}` is not a git repository URL slipway can use"),
            hint,
        );
    }
    let ami_parameter = match &raw.ami_parameter {
        Some(p) => {
            if !p.get_ref().starts_with('/') || p.get_ref().len() < 2 {
                sink.err(
                    &p.span(),
                    format!("`{}` is not an SSM parameter path", p.get_ref()),
                    format!("write a path starting with `/`, like `{DEFAULT_AMI_PARAMETER}`"),
                );
            }
            p.get_ref().clone()
        }
        None => DEFAULT_AMI_PARAMETER.to_string(),
    };
    let slipway = slipway_download(sink, &raw);
    let webhook_cidrs = raw
        .webhook_cidrs
        .as_ref()
        .map(|l| cidr_list(sink, l, "webhook CIDR"))
        .unwrap_or_default();
    let scan_interval = match &raw.scan_interval {
        Some(i) => {
            if !SCAN_INTERVALS.contains(&i.get_ref().as_str()) {
                sink.err(
                    &i.span(),
                    format!("`{}` is not a scan interval Jenkins offers", i.get_ref()),
                    format!("use one of {}", backticked(SCAN_INTERVALS.iter().copied())),
                );
            }
            i.get_ref().clone()
        }
        None => DEFAULT_SCAN_INTERVAL.to_string(),
    };
    let tls_parameter_path = master.tls_parameter_path.as_ref().map(|p| {
        let path = p.get_ref();
        let valid = path.len() > 1
            && path.starts_with('/')
            && !path.ends_with('/')
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_.-".contains(c));
        if !valid {
            sink.err(
                &p.span(),
                format!("`{path}` is not an SSM parameter path"),
                "write a path like `/org/jenkins-tls`, holding the parameters `certificate` and `private-key`",
            );
        }
        path.clone()
    });
    let volume = "; sizes are GiB";
    let master_volume_size = int_in(
        sink,
        master.volume_size.as_ref(),
        30,
        8..=16384,
        "`volume_size`",
        volume,
    );
    let home_volume_size = int_in(
        sink,
        master.home_volume_size.as_ref(),
        50,
        1..=16384,
        "`home_volume_size`",
        volume,
    );
    let agents = raw.agents.as_ref().map(Spanned::get_ref);
    let agent_count = int_in(
        sink,
        agents.and_then(|a| a.count.as_ref()),
        1,
        0..=20,
        "agent `count`",
        "",
    );
    let agent_volume_size = int_in(
        sink,
        agents.and_then(|a| a.volume_size.as_ref()),
        50,
        8..=16384,
        "`volume_size`",
        volume,
    );
    Jenkins {
        master_instance_type: instance_type(sink, master.instance_type.as_ref(), "t3.medium"),
        allowed_cidrs,
        master_volume_size: master_volume_size.unwrap_or(30),
        home_volume_size: home_volume_size.unwrap_or(50),
        key_name: master.key_name.as_ref().map(|k| k.get_ref().clone()),
        agent_count: agent_count
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0),
        agent_instance_type: instance_type(
            sink,
            agents.and_then(|a| a.instance_type.as_ref()),
            "t3.large",
        ),
        agent_volume_size: agent_volume_size.unwrap_or(50),
        repository_url: url.clone(),
        ami_parameter,
        slipway,
        webhook_cidrs,
        scan_interval,
        tls_parameter_path,
    }
}

/// The intervals Jenkins' periodic folder trigger accepts.
const SCAN_INTERVALS: &[&str] = &[
    "1m", "2m", "5m", "10m", "15m", "20m", "25m", "30m", "1h", "2h", "4h", "8h", "12h", "1d", "2d",
    "1w", "2w", "4w",
];

/// With push webhooks, scanning is the slow fallback.
const DEFAULT_SCAN_INTERVAL: &str = "1h";

/// `slipway_url` and `slipway_sha256`: both or neither.
fn slipway_download(sink: &mut Sink<'_>, raw: &RawJenkins) -> Option<Download> {
    match (&raw.slipway_url, &raw.slipway_sha256) {
        (Some(u), Some(d)) => {
            if !u.get_ref().starts_with("https://") {
                sink.err(
                    &u.span(),
                    format!("`{}` is not an https:// URL", u.get_ref()),
                    "give the https:// address of a slipway Linux binary the agents can download",
                );
            }
            let digest = d.get_ref().to_ascii_lowercase();
            if digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
                sink.err(
                    &d.span(),
                    format!("`{}` is not a SHA-256 digest", d.get_ref()),
                    "write the 64 hexadecimal digits `sha256sum slipway` prints",
                );
            }
            Some(Download {
                url: u.get_ref().clone(),
                sha256: digest,
            })
        }
        (Some(u), None) => {
            sink.err(
                &u.span(),
                "`slipway_url` has no `slipway_sha256`: the agents would run whatever that address serves".to_string(),
                "add `slipway_sha256 = \"…\"` with the binary's `sha256sum`",
            );
            None
        }
        (None, Some(d)) => {
            sink.err(
                &d.span(),
                "`slipway_sha256` without `slipway_url`".to_string(),
                "add `slipway_url`, the https:// address of the binary, or remove the digest",
            );
            None
        }
        (None, None) => None,
    }
}

fn valid_repository_url(url: &str) -> bool {
    if let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("ssh://"))
    {
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = host.rsplit('@').next().unwrap_or(host);
        return !host.is_empty() && !path.is_empty() && !url.contains(char::is_whitespace);
    }
    if let Some(rest) = url.strip_prefix("git@") {
        return rest
            .split_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && !p.is_empty())
            && !url.contains(char::is_whitespace);
    }
    false
}

/// One path component of an ECR repository name: `[a-z0-9]+(?:[._-][a-z0-9]+)*`.
fn ecr_component_ok(c: &str) -> bool {
    let alnum = |ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit();
    let sep = |ch: char| matches!(ch, '.' | '_' | '-');
    let mut prev_sep = true;
    for ch in c.chars() {
        if sep(ch) {
            if prev_sep {
                return false;
            }
            prev_sep = true;
        } else if alnum(ch) {
            prev_sep = false;
        } else {
            return false;
        }
    }
    !prev_sep
}

fn registry(sink: &mut Sink<'_>, raw: RawRegistry) -> Registry {
    let name = raw.repository.get_ref();
    if !(2..=256).contains(&name.len()) || !name.split('/').all(ecr_component_ok) {
        sink.err(
            &raw.repository.span(),
            format!("`{name}` is not a valid ECR repository name"),
            "use 2 to 256 lowercase letters and digits, separated by single `.`, `_`, `-` or `/`, like `smallcase/app`",
        );
    }
    let keep_images = int_in(
        sink,
        raw.keep_images.as_ref(),
        30,
        1..=1000,
        "`keep_images`",
        "",
    );
    Registry {
        repository: name.clone(),
        scan_on_push: raw.scan_on_push.unwrap_or(true),
        keep_images: keep_images.unwrap_or(30),
        tag_mutability: raw.tag_mutability.unwrap_or_default(),
    }
}

fn cluster(
    sink: &mut Sink<'_>,
    raw: RawCluster,
    region: Option<&str>,
    stack: Option<&str>,
) -> Cluster {
    let name = raw.name.get_ref();
    let ok = (1..=100).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        sink.err(
            &raw.name.span(),
            format!("`{name}` is not a valid EKS cluster name"),
            "use 1 to 100 letters, digits, `-` and `_`, starting with a letter or digit",
        );
    }
    let version = raw.version.get_ref();
    let minor = version
        .strip_prefix("1.")
        .filter(|m| (1..=2).contains(&m.len()) && !m.starts_with('0'))
        .and_then(|m| m.parse::<u32>().ok());
    match minor {
        None => sink.err(
            &raw.version.span(),
            format!("`{version}` is not a Kubernetes version"),
            "write `1.NN` as a string, like `\"1.31\"`",
        ),
        Some(m) if m < OLDEST_EKS_MINOR => sink.err(
            &raw.version.span(),
            format!("EKS no longer offers Kubernetes `{version}`"),
            format!("use `1.{OLDEST_EKS_MINOR}` or later, e.g. `1.31`"),
        ),
        Some(_) if super::jenkins_release::kubectl(version).is_none() => sink.err(
            &raw.version.span(),
            format!("slipway pins no kubectl for Kubernetes `{version}`: the Jenkins agents install a kubectl checked against its SHA-256"),
            format!(
                "use a version at most one minor from a pinned kubectl ({}), or a slipway release that pins one for this version",
                backticked(super::jenkins_release::KUBECTL.iter().map(|k| k.minor))
            ),
        ),
        Some(_) => {}
    }
    let public_access_cidrs = match &raw.public_access_cidrs {
        Some(list) => {
            if list.get_ref().is_empty() {
                sink.err(
                    &list.span(),
                    "`public_access_cidrs` is empty".to_string(),
                    "list at least one CIDR, or set `endpoint_public_access = false`",
                );
            }
            cidr_list(sink, list, "public access CIDR")
        }
        None => Ipv4Net::new(std::net::Ipv4Addr::UNSPECIFIED, 0)
            .into_iter()
            .collect(),
    };
    let logging = match &raw.logging {
        Some(list) => {
            let mut seen = BTreeSet::new();
            for l in list.get_ref() {
                if !LOG_TYPES.contains(&l.get_ref().as_str()) {
                    sink.err(
                        &l.span(),
                        format!("`{}` is not an EKS control plane log type", l.get_ref()),
                        format!("use any of {}", backticked(LOG_TYPES.iter().copied())),
                    );
                } else if !seen.insert(l.get_ref().as_str()) {
                    sink.err(
                        &l.span(),
                        format!("log type `{}` is listed twice", l.get_ref()),
                        "list each log type once",
                    );
                }
            }
            list.get_ref().iter().map(|l| l.get_ref().clone()).collect()
        }
        None => ["api", "audit", "authenticator"].map(String::from).to_vec(),
    };
    let admins = raw
        .admins
        .as_ref()
        .map(|list| cluster_admins(sink, list, region, stack))
        .unwrap_or_default();
    let fargate_profile_quota = int_in(
        sink,
        raw.fargate_profile_quota.as_ref(),
        FARGATE_PROFILES_PER_CLUSTER as i64,
        1..=10_000,
        "`fargate_profile_quota`",
        ": the quota of Fargate profiles per cluster your account was granted",
    )
    .map_or(FARGATE_PROFILES_PER_CLUSTER, |n| n as usize);
    Cluster {
        name: name.clone(),
        version: version.clone(),
        endpoint_public_access: raw.endpoint_public_access.unwrap_or(true),
        public_access_cidrs,
        logging,
        admins,
        fargate_profile_quota,
    }
}

/// EKS's default quota of Fargate profiles per cluster ("Fargate profiles
/// per cluster" in Service Quotas; adjustable).
pub(super) const FARGATE_PROFILES_PER_CLUSTER: usize = 10;

/// The cluster needs a Fargate profile for `kube-system` and one per
/// environment; more than the account's quota and EKS refuses the rest
/// halfway through an apply. Said here, before anything is created, at the
/// first environment over the quota.
fn fargate_profiles_within_quota(
    sink: &mut Sink<'_>,
    raw: &[(S<String>, super::schema::RawEnvironment)],
    cluster: &Cluster,
    quota_span: Option<Range<usize>>,
) {
    let needed = raw.len() + 1;
    let quota = cluster.fargate_profile_quota;
    if needed <= quota {
        return;
    }
    // kube-system takes one, so environment number `quota` is the first
    // without room.
    let Some((first_over, _)) = raw.get(quota - 1) else {
        return;
    };
    let set = if quota_span.is_some() {
        "your `fargate_profile_quota`"
    } else {
        "EKS's default quota"
    };
    sink.err(
        &first_over.span(),
        format!(
            "cluster `{}` would need {needed} Fargate profiles (`kube-system` and one per environment), \
             and {set} is {quota} per cluster: from environment `{}` on, EKS would refuse them halfway through an apply",
            cluster.name,
            first_over.get_ref()
        ),
        "ask AWS for more (Service Quotas → Amazon Elastic Kubernetes Service → \"Fargate profiles per cluster\") \
         and set `[cluster] fargate_profile_quota` to the value granted, or split the environments over more stacks",
    );
}

/// `[cluster] admins`: IAM role or user ARNs of the stack's partition, each
/// once. An STS assumed-role ARN (what `aws sts get-caller-identity` prints
/// for a role) is refused with the role ARN to use instead.
fn cluster_admins(
    sink: &mut Sink<'_>,
    list: &Strings,
    region: Option<&str>,
    stack: Option<&str>,
) -> Vec<String> {
    let jenkins: Vec<String> = stack
        .map(|s| {
            ["agent", "production", "master"]
                .map(|r| format!("role/{s}-jenkins-{r}"))
                .to_vec()
        })
        .unwrap_or_default();
    let drift = stack.map(|s| format!("role/{s}-drift"));
    let partition = region.map(super::partition_of);
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for item in list.get_ref() {
        let arn = item.get_ref();
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let valid = parts.len() == 6
            && parts[0] == "arn"
            && parts[2] == "iam"
            && parts[3].is_empty()
            && parts[4].len() == 12
            && parts[4].chars().all(|c| c.is_ascii_digit())
            && (parts[5].starts_with("role/") || parts[5].starts_with("user/"))
            && parts[5].len() > 5
            && parts[5]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c));
        if parts.len() == 6 && parts[2] == "sts" && parts[5].starts_with("assumed-role/") {
            let role = parts[5]
                .trim_start_matches("assumed-role/")
                .split('/')
                .next()
                .unwrap_or_default();
            sink.err(
                &item.span(),
                format!("`{arn}` is an assumed-role session, not an IAM principal"),
                format!(
                    "use the role's ARN: `arn:{}:iam::{}:role/{role}` (with its path, if it has one)",
                    parts[1], parts[4]
                ),
            );
            continue;
        }
        if !valid {
            sink.err(
                &item.span(),
                format!("`{arn}` is not an IAM role or user ARN"),
                "write `arn:aws:iam::123456789012:role/NAME` or `arn:aws:iam::123456789012:user/NAME`",
            );
            continue;
        }
        if let Some(p) = partition
            && parts[1] != p
        {
            sink.err(
                &item.span(),
                format!(
                    "`{arn}` is in partition `{}`, the stack's region is in `{p}`",
                    parts[1]
                ),
                format!("use an ARN starting with `arn:{p}:`"),
            );
            continue;
        }
        if jenkins.iter().any(|j| j == parts[5]) {
            sink.err(
                &item.span(),
                format!("`{arn}` is one of the stack's Jenkins roles"),
                "each has its own access, limited to the namespaces it deploys to; list other principals here",
            );
            continue;
        }
        if drift.as_deref() == Some(parts[5]) {
            sink.err(
                &item.span(),
                format!("`{arn}` is the stack's drift role"),
                "it has its own access entry, read-only; list other principals here",
            );
            continue;
        }
        if !seen.insert(arn.as_str()) {
            sink.err(
                &item.span(),
                format!("`{arn}` is listed twice"),
                "list each admin once",
            );
            continue;
        }
        out.push(arn.clone());
    }
    out
}

fn valid_env_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// RFC 1123 label: what Kubernetes accepts as a namespace name.
fn valid_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `git check-ref-format --branch` rules.
fn valid_branch(s: &str) -> bool {
    !s.is_empty()
        && s != "@"
        && s != "HEAD"
        && !s.starts_with('-')
        && !s.starts_with('/')
        && !s.ends_with('/')
        && !s.ends_with('.')
        && !s.contains("..")
        && !s.contains("//")
        && !s.contains("@{")
        && !s.chars().any(|c| {
            c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        })
        && s.split('/')
            .all(|c| !c.starts_with('.') && !c.ends_with(".lock"))
}

fn environments(
    sink: &mut Sink<'_>,
    raw: &[(S<String>, super::schema::RawEnvironment)],
    table_span: Option<&Range<usize>>,
    root: &Path,
) -> Vec<Environment> {
    if raw.is_empty() {
        if let Some(at) = table_span {
            sink.err(
                at,
                "`[environments]` has no environment".to_string(),
                "add at least one `[environments.NAME]` table with `branch`, `namespace` and `overlay`",
            );
        }
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut branches: BTreeMap<&str, &str> = BTreeMap::new();
    let mut namespaces: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, env) in raw {
        let n = name.get_ref().as_str();
        if !valid_env_name(n) {
            sink.err(
                &name.span(),
                format!("environment name `{n}` is not allowed"),
                "use lowercase letters, digits and `-`, starting with a letter (at most 63)",
            );
        }
        let branch = env.branch.get_ref().as_str();
        if !valid_branch(branch) {
            sink.err(
                &env.branch.span(),
                format!("`{branch}` is not a valid git branch name"),
                "use a name `git check-ref-format --branch` accepts, like `master` or `release/1.2`",
            );
        } else if let Some(first) = branches.insert(branch, n) {
            branches.insert(branch, first);
            sink.err(
                &env.branch.span(),
                format!("environment `{first}` and `{n}` both deploy branch `{branch}`"),
                "give each environment its own branch",
            );
        }
        let ns = env.namespace.get_ref().as_str();
        if !valid_dns_label(ns) {
            sink.err(
                &env.namespace.span(),
                format!("`{ns}` is not a valid Kubernetes namespace name"),
                "use at most 63 lowercase letters, digits and `-`, starting and ending with a letter or digit",
            );
        } else if RESERVED_NAMESPACES.contains(&ns) {
            sink.err(
                &env.namespace.span(),
                format!("namespace `{ns}` belongs to Kubernetes"),
                format!("use a namespace of your own, like `{n}`"),
            );
        } else if let Some(first) = namespaces.insert(ns, n) {
            namespaces.insert(ns, first);
            sink.err(
                &env.namespace.span(),
                format!("environment `{first}` and `{n}` both use namespace `{ns}`"),
                "give each environment its own namespace",
            );
        }
        let overlay = root.join(env.overlay.get_ref());
        check_overlay(sink, &env.overlay, &overlay, root);
        let min_soak = env.min_soak.as_ref().and_then(|m| {
            crate::clock::parse_duration(m.get_ref())
                .map_err(|e| {
                    sink.err(
                        &m.span(),
                        e,
                        "for example `min_soak = \"30m\"` (units s, m, h, d)",
                    )
                })
                .ok()
        });
        if let (Some(m), None) = (&env.min_soak, &env.promote_from) {
            sink.err(
                &m.span(),
                format!("environment `{n}` has `min_soak` but no `promote_from`"),
                "name the environment releases must soak in with `promote_from`, or drop `min_soak`",
            );
        }
        out.push(Environment {
            name: n.to_string(),
            branch: branch.to_string(),
            namespace: ns.to_string(),
            overlay,
            protected: env.protected.unwrap_or(false),
            promote_from: env.promote_from.as_ref().map(|p| p.get_ref().clone()),
            min_soak,
        });
    }
    promotion_chain(sink, raw);
    out
}

/// Each `promote_from` names another known environment, and following them
/// never comes back to where it started.
fn promotion_chain(sink: &mut Sink<'_>, raw: &[(S<String>, super::schema::RawEnvironment)]) {
    let from: BTreeMap<&str, &S<String>> = raw
        .iter()
        .filter_map(|(n, e)| Some((n.get_ref().as_str(), e.promote_from.as_ref()?)))
        .collect();
    let known: Vec<&str> = raw.iter().map(|(n, _)| n.get_ref().as_str()).collect();
    for (name, upstream) in &from {
        let up = upstream.get_ref().as_str();
        if up == *name {
            sink.err(
                &upstream.span(),
                format!("environment `{name}` cannot promote from itself"),
                "name the environment its releases must come from, like `promote_from = \"green\"`",
            );
            continue;
        }
        if !known.contains(&up) {
            sink.err(
                &upstream.span(),
                format!("`promote_from` of environment `{name}` names `{up}`, which is not an environment of this stack"),
                format!("use one of {}", known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")),
            );
            continue;
        }
        // Walk upstream; coming back to `name` is a cycle, reported once,
        // at its first environment by name.
        let mut chain = vec![*name];
        let mut at = up;
        loop {
            if at == *name {
                if chain.iter().min() == Some(name) {
                    chain.push(name);
                    sink.err(
                        &upstream.span(),
                        format!(
                            "promotion cycle: {}",
                            chain
                                .iter()
                                .map(|s| format!("`{s}`"))
                                .collect::<Vec<_>>()
                                .join(" promotes from ")
                        ),
                        "the chain of `promote_from` must end at an environment that takes builds directly (like `develop`)",
                    );
                }
                break;
            }
            if chain.contains(&at) {
                break;
            }
            chain.push(at);
            match from.get(at) {
                Some(next) => at = next.get_ref().as_str(),
                None => break,
            }
        }
    }
}

const KUSTOMIZATION_FILES: &[&str] = &["kustomization.yaml", "kustomization.yml", "Kustomization"];

fn check_overlay(sink: &mut Sink<'_>, written: &S<String>, resolved: &Path, root: &Path) {
    let root_shown = if root.as_os_str().is_empty() {
        Path::new(".")
    } else {
        root
    };
    if written.get_ref().is_empty() {
        sink.err(
            &written.span(),
            "`overlay` is empty".to_string(),
            format!(
                "give the kustomize overlay directory, relative to `{}`",
                root_shown.display()
            ),
        );
    } else if !resolved.is_dir() {
        sink.err(
            &written.span(),
            format!("overlay directory `{}` does not exist", resolved.display()),
            format!(
                "create it with a `kustomization.yaml`, or fix the path; it is relative to `{}`",
                root_shown.display()
            ),
        );
    } else if !KUSTOMIZATION_FILES
        .iter()
        .any(|f| resolved.join(f).is_file())
    {
        sink.err(
            &written.span(),
            format!(
                "overlay directory `{}` has no kustomization file",
                resolved.display()
            ),
            "add a `kustomization.yaml` to it",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_types() {
        for ok in [
            "t3.medium",
            "m7i-flex.large",
            "c6gn.16xlarge",
            "u-6tb1.metal",
            "c7i.metal-24xl",
        ] {
            assert!(valid_instance_type(ok), "{ok}");
        }
        for bad in [
            "t3",
            "T3.medium",
            "t3.",
            ".large",
            "medium.large",
            "t3..large",
            "t3-.large",
        ] {
            assert!(!valid_instance_type(bad), "{bad}");
        }
    }

    #[test]
    fn branches() {
        for ok in ["master", "release/1.2", "feature/x-y_z"] {
            assert!(valid_branch(ok), "{ok}");
        }
        for bad in [
            "", "a..b", "a b", "-x", "x/", "x.lock", "a/.b", "x@{y", "a:b", "HEAD", "x.",
        ] {
            assert!(!valid_branch(bad), "{bad}");
        }
    }

    #[test]
    fn ecr_names() {
        for ok in ["smallcase/app", "a1", "my.app_x-y/z"] {
            assert!(ok.split('/').all(ecr_component_ok), "{ok}");
        }
        for bad in ["Smallcase/app", "a//b", "a-", "-a", "a__b", "/a"] {
            assert!(!bad.split('/').all(ecr_component_ok), "{bad}");
        }
    }

    #[test]
    fn default_carving() {
        let vpc: Ipv4Net = "10.0.0.0/16".parse().unwrap();
        let (public, private) = default_subnets(vpc, 2).unwrap();
        let s = |v: &[Ipv4Net]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(s(&public), ["10.0.0.0/20", "10.0.16.0/20"]);
        assert_eq!(s(&private), ["10.0.32.0/20", "10.0.48.0/20"]);
        let (public, private) = default_subnets("10.1.0.0/24".parse().unwrap(), 3).unwrap();
        assert_eq!(s(&public), ["10.1.0.0/27", "10.1.0.32/27", "10.1.0.64/27"]);
        assert_eq!(s(&private)[0], "10.1.0.96/27");
        assert!(default_subnets("10.1.0.0/27".parse().unwrap(), 2).is_none());
    }

    #[test]
    fn project_root_is_above_stacks() {
        assert_eq!(project_root(Path::new("stacks/a.toml")), Path::new(""));
        assert_eq!(project_root(Path::new("/p/stacks/a.toml")), Path::new("/p"));
        assert_eq!(
            project_root(Path::new("/p/other/a.toml")),
            Path::new("/p/other")
        );
        assert_eq!(project_root(Path::new("a.toml")), Path::new(""));
    }
}
