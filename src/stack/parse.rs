//! TOML text to the schema structs, reporting every syntax error, unknown
//! key, missing key and type error it can find in one pass.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::diag::Sink;
use super::schema::{
    CLUSTER, DRIFT, ENVIRONMENT, INGRESS, JENKINS, JENKINS_AGENTS, JENKINS_MASTER, NETWORK,
    REGISTRY, RawCluster, RawDrift, RawEnvironment, RawIngress, RawJenkins, RawNetwork,
    RawRegistry, RawStack, STACK, TOP, TableKeys,
};

/// The stack file's sections, each present only if it parsed.
#[derive(Debug, Default)]
pub(super) struct RawDocument {
    pub stack: Option<RawStack>,
    pub network: Option<RawNetwork>,
    pub jenkins: Option<RawJenkins>,
    pub registry: Option<RawRegistry>,
    pub cluster: Option<RawCluster>,
    pub ingress: Option<RawIngress>,
    pub drift: Option<RawDrift>,
    pub state: Option<super::schema::RawState>,
    /// In file order: the table name (with its span) and its contents.
    pub environments: Vec<(Spanned<String>, RawEnvironment)>,
    /// Where `[environments]` is, when it exists but has no environment.
    pub environments_span: Option<Range<usize>>,
}

const DOCS: &str = "docs/stack.md";

/// Parses `source`; syntax errors stop here, all other problems are recorded
/// in `sink` and the sections that had them are left out.
pub(super) fn parse(sink: &mut Sink<'_>, source: &str) -> RawDocument {
    let (root, errors) = DeTable::parse_recoverable(source);
    if !errors.is_empty() {
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            sink.err(
                &span,
                format!("invalid TOML: {}", one_line(e.message())),
                "fix the syntax at this position; strings need double quotes, tables `[name]`",
            );
        }
        return RawDocument::default();
    }
    let mut root = root.into_inner();
    let mut doc = RawDocument::default();
    // A missing section is reported at the top of the file; the sections
    // that are there are still checked.
    check_keys(sink, &mut root, &(0..0), &TOP);
    for (key, value) in root {
        let key_span = key.span();
        let name = key.into_inner();
        match name.as_ref() {
            "stack" => doc.stack = section(sink, value, &STACK, &[]),
            "network" => doc.network = section(sink, value, &NETWORK, &[]),
            "jenkins" => {
                doc.jenkins = section(
                    sink,
                    value,
                    &JENKINS,
                    &[("master", &JENKINS_MASTER), ("agents", &JENKINS_AGENTS)],
                );
            }
            "registry" => doc.registry = section(sink, value, &REGISTRY, &[]),
            "cluster" => doc.cluster = section(sink, value, &CLUSTER, &[]),
            "ingress" => doc.ingress = section(sink, value, &INGRESS, &[]),
            "drift" => doc.drift = section(sink, value, &DRIFT, &[]),
            "state" => doc.state = section(sink, value, &super::schema::STATE, &[]),
            "environments" => environments(sink, key_span, value, &mut doc),
            _ => {}
        }
    }
    doc
}

fn environments(
    sink: &mut Sink<'_>,
    key_span: Range<usize>,
    value: Spanned<DeValue<'_>>,
    doc: &mut RawDocument,
) {
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        sink.err(
            &span,
            "`environments` must be a table of environments".to_string(),
            "write one `[environments.NAME]` table per environment",
        );
        return;
    };
    doc.environments_span = Some(key_span);
    let mut envs: Vec<(Spanned<String>, RawEnvironment)> = Vec::new();
    for (key, value) in table {
        let key = Spanned::new(key.span(), key.into_inner().into_owned());
        if let Some(env) = section::<RawEnvironment>(sink, value, &ENVIRONMENT, &[]) {
            envs.push((key, env));
        }
    }
    envs.sort_by_key(|(k, _)| k.span().start);
    doc.environments = envs;
}

/// Checks one table's keys, then deserializes it when they are right.
fn section<T: for<'de> Deserialize<'de>>(
    sink: &mut Sink<'_>,
    value: Spanned<DeValue<'_>>,
    keys: &TableKeys,
    nested: &[(&str, &TableKeys)],
) -> Option<T> {
    let span = value.span();
    let (value, keys_ok) = match value.into_inner() {
        DeValue::Table(mut table) => {
            let mut ok = check_keys(sink, &mut table, &span, keys);
            for (name, nested_keys) in nested {
                for (k, v) in table.iter_mut() {
                    if k.get_ref() == name {
                        let nested_span = v.span();
                        if let DeValue::Table(inner) = v.get_mut() {
                            ok &= check_keys(sink, inner, &nested_span, nested_keys);
                        }
                    }
                }
            }
            (DeValue::Table(table), ok)
        }
        other => {
            sink.err(
                &span,
                format!(
                    "`{}` must be a table, found a {}",
                    keys.path,
                    other.type_str()
                ),
                format!("write it as `[{}]` followed by its keys", keys.path),
            );
            return None;
        }
    };
    if !keys_ok {
        return None;
    }
    match T::deserialize(ValueDeserializer::from(Spanned::new(span.clone(), value))) {
        Ok(v) => Some(v),
        Err(e) => {
            let at = e.span().unwrap_or(span);
            sink.err(
                &at,
                type_message(e.message()),
                format!(
                    "{DOCS} lists every key of `[{}]` with its type",
                    keys.path.trim_end_matches(".NAME")
                ),
            );
            None
        }
    }
}

/// Reports (and removes) unknown keys and reports missing required keys.
/// Returns whether every required key is present.
fn check_keys(
    sink: &mut Sink<'_>,
    table: &mut DeTable<'_>,
    span: &Range<usize>,
    keys: &TableKeys,
) -> bool {
    let allowed = keys
        .allowed
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut unknown = Vec::new();
    for key in table.keys() {
        if !keys.allowed.contains(&key.get_ref().as_ref()) {
            unknown.push((key.span(), key.get_ref().to_string()));
        }
    }
    for (at, key) in &unknown {
        let (message, hint) = if keys.path.is_empty() {
            (
                format!("unknown table `{key}`"),
                format!("the top-level tables are {allowed}"),
            )
        } else {
            (
                format!("unknown key `{key}` in `[{}]`", keys.path),
                match closest(key, keys.allowed) {
                    Some(near) => format!("did you mean `{near}`? allowed keys: {allowed}"),
                    None => format!("allowed keys: {allowed}"),
                },
            )
        };
        sink.err(at, message, hint);
    }
    if !unknown.is_empty() {
        let all = std::mem::take(table);
        for (k, v) in all {
            if keys.allowed.contains(&k.get_ref().as_ref()) {
                table.insert(k, v);
            }
        }
    }
    let mut complete = true;
    for required in keys.required {
        if !table.keys().any(|k| k.get_ref() == required) {
            complete = false;
            if keys.path.is_empty() {
                sink.err(
                    span,
                    format!("missing table `[{required}]`"),
                    format!("add a `[{required}]` table; {DOCS} shows an example"),
                );
            } else {
                sink.err(
                    span,
                    format!("`[{}]` is missing required key `{required}`", keys.path),
                    format!("add `{required} = …` to `[{}]`; see {DOCS}", keys.path),
                );
            }
        }
    }
    complete
}

/// serde's messages, made to read like the rest of ours.
fn type_message(message: &str) -> String {
    let message = one_line(message);
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return format!("unsupported value {rest}");
    }
    if let Some((found, expected)) = message
        .strip_prefix("invalid type: ")
        .and_then(|m| m.split_once(", expected "))
    {
        let expected = match expected {
            "i64" | "u64" | "u32" | "i32" => "an integer",
            "a sequence" => "an array",
            "a map" => "a table",
            other => other,
        };
        return format!("expected {expected}, found {found}");
    }
    message
}

fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The allowed key a typo most likely meant: small edit distance, or one
/// contains the other.
fn closest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (edit_distance(key, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4) || a.contains(key) || key.contains(a))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_keys_only() {
        assert_eq!(
            closest("regoin", &["name", "region", "tags"]),
            Some("region")
        );
        assert_eq!(
            closest("allowed_cidr", &["allowed_cidrs", "volume_size"]),
            Some("allowed_cidrs")
        );
        assert_eq!(closest("zzzzzzzz", &["name", "region", "tags"]), None);
    }
}
