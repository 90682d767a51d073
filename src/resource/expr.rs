//! Attribute values that may not be known until apply.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::addr::Address;

/// A reference to an attribute of another resource, e.g. `aws.vpc.main.id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Reference {
    pub addr: Address,
    pub attr: String,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.addr, self.attr)
    }
}

/// A desired attribute value: a literal, or something computed from other
/// resources' attributes that is known only once they exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expr {
    /// A value known now.
    Lit(Value),
    /// Another resource's attribute.
    Ref(Reference),
    /// A list whose elements may be unknown.
    List(Vec<Expr>),
    /// An object whose keys and values may be unknown (IRSA trust policies key
    /// their conditions by the OIDC issuer).
    Map(Vec<(Expr, Expr)>),
    /// String concatenation.
    Concat(Vec<Expr>),
}

/// Why an expression could not be turned into a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResolveError {
    #[error("`{0}` is not known yet")]
    Unknown(Reference),
    #[error("`{reference}` is {found}, expected a string")]
    NotAString { reference: String, found: String },
}

impl Expr {
    pub fn str(s: impl Into<String>) -> Expr {
        Expr::Lit(Value::String(s.into()))
    }

    pub fn reference(addr: &Address, attr: &str) -> Expr {
        Expr::Ref(Reference {
            addr: addr.clone(),
            attr: attr.to_string(),
        })
    }

    /// An object with literal keys.
    pub fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Expr)>) -> Expr {
        Expr::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Expr::str(k), v))
                .collect(),
        )
    }

    /// Every reference this expression contains.
    pub fn references(&self) -> Vec<&Reference> {
        let mut out = Vec::new();
        self.collect_refs(&mut out);
        out
    }

    fn collect_refs<'a>(&'a self, out: &mut Vec<&'a Reference>) {
        match self {
            Expr::Lit(_) => {}
            Expr::Ref(r) => out.push(r),
            Expr::List(items) | Expr::Concat(items) => {
                items.iter().for_each(|e| e.collect_refs(out));
            }
            Expr::Map(entries) => {
                for (k, v) in entries {
                    k.collect_refs(out);
                    v.collect_refs(out);
                }
            }
        }
    }

    /// The value, if nothing in it is unknown.
    pub fn known(&self) -> Option<Value> {
        self.resolve(&|_| None).ok()
    }

    /// Substitutes every reference `lookup` knows and folds what became
    /// literal; references it does not know stay as they are.
    pub fn substitute(&self, lookup: &dyn Fn(&Reference) -> Option<Value>) -> Expr {
        let folded = match self {
            Expr::Lit(v) => return Expr::Lit(v.clone()),
            Expr::Ref(r) => match lookup(r) {
                Some(v) => return Expr::Lit(v),
                None => return self.clone(),
            },
            Expr::List(items) => Expr::List(items.iter().map(|e| e.substitute(lookup)).collect()),
            Expr::Map(entries) => Expr::Map(
                entries
                    .iter()
                    .map(|(k, v)| (k.substitute(lookup), v.substitute(lookup)))
                    .collect(),
            ),
            Expr::Concat(items) => {
                Expr::Concat(items.iter().map(|e| e.substitute(lookup)).collect())
            }
        };
        match folded.known() {
            Some(v) => Expr::Lit(v),
            None => folded,
        }
    }

    /// The value, with every reference looked up; fails on the first unknown.
    pub fn resolve(
        &self,
        lookup: &dyn Fn(&Reference) -> Option<Value>,
    ) -> Result<Value, ResolveError> {
        match self {
            Expr::Lit(v) => Ok(v.clone()),
            Expr::Ref(r) => lookup(r).ok_or_else(|| ResolveError::Unknown(r.clone())),
            Expr::List(items) => items
                .iter()
                .map(|e| e.resolve(lookup))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Expr::Map(entries) => {
                let mut obj = serde_json::Map::new();
                for (k, v) in entries {
                    let key = as_string(k, k.resolve(lookup)?)?;
                    obj.insert(key, v.resolve(lookup)?);
                }
                Ok(Value::Object(obj))
            }
            Expr::Concat(items) => {
                let mut s = String::new();
                for e in items {
                    s.push_str(&as_string(e, e.resolve(lookup)?)?);
                }
                Ok(Value::String(s))
            }
        }
    }
}

fn as_string(expr: &Expr, v: Value) -> Result<String, ResolveError> {
    match v {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(ResolveError::NotAString {
            reference: match expr {
                Expr::Ref(r) => r.to_string(),
                _ => "a value".to_string(),
            },
            found: other.to_string(),
        }),
    }
}

impl From<Value> for Expr {
    fn from(v: Value) -> Self {
        Expr::Lit(v)
    }
}

impl From<&str> for Expr {
    fn from(s: &str) -> Self {
        Expr::str(s)
    }
}

impl From<String> for Expr {
    fn from(s: String) -> Self {
        Expr::str(s)
    }
}

impl From<bool> for Expr {
    fn from(b: bool) -> Self {
        Expr::Lit(Value::Bool(b))
    }
}

impl From<u64> for Expr {
    fn from(n: u64) -> Self {
        Expr::Lit(Value::from(n))
    }
}

impl From<BTreeMap<String, String>> for Expr {
    fn from(m: BTreeMap<String, String>) -> Self {
        Expr::map(m.into_iter().map(|(k, v)| (k, Expr::str(v))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vpc() -> Address {
        "aws.vpc.main".parse().unwrap()
    }

    #[test]
    fn substitutes_known_references_and_folds() {
        let e = Expr::map([
            ("vpc_id", Expr::reference(&vpc(), "id")),
            ("cidr", Expr::str("10.0.0.0/16")),
        ]);
        assert_eq!(e.known(), None);
        assert_eq!(e.references().len(), 1);
        let done = e.substitute(&|r| (r.attr == "id").then(|| json!("vpc-1")));
        assert_eq!(
            done,
            Expr::Lit(json!({"vpc_id": "vpc-1", "cidr": "10.0.0.0/16"}))
        );
    }

    #[test]
    fn keeps_unknown_parts() {
        let e = Expr::List(vec![Expr::str("a"), Expr::reference(&vpc(), "arn")]);
        let partial = e.substitute(&|_| None);
        assert!(matches!(partial, Expr::List(_)));
        let err = e.resolve(&|_| None).unwrap_err();
        assert_eq!(err.to_string(), "`aws.vpc.main.arn` is not known yet");
    }

    #[test]
    fn concat_builds_strings_and_computed_keys() {
        let issuer = Expr::reference(&vpc(), "issuer");
        let e = Expr::Map(vec![(
            Expr::Concat(vec![issuer, Expr::str(":sub")]),
            Expr::str("system:serviceaccount:kube-system:x"),
        )]);
        let v = e.resolve(&|_| Some(json!("oidc.example/id/ABC"))).unwrap();
        assert_eq!(
            v,
            json!({"oidc.example/id/ABC:sub": "system:serviceaccount:kube-system:x"})
        );
    }

    #[test]
    fn serde_round_trip() {
        let e = Expr::List(vec![Expr::str("a"), Expr::reference(&vpc(), "id")]);
        let s = serde_json::to_string(&e).unwrap();
        let back: Expr = serde_json::from_str(&s).unwrap();
        assert_eq!(back, e);
    }
}
