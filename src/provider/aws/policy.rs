//! IAM policy documents compared by meaning, not by text: key order, a single
//! value versus a one-element list, and the order of list elements do not
//! matter to IAM, so they must not show up as changes.

use serde_json::{Map, Value};

/// Elements whose value may be a string or a list of strings.
const SET_KEYS: &[&str] = &["Action", "NotAction", "Resource", "NotResource"];

/// The canonical form: statements always a list, sets as sorted lists,
/// principals' and conditions' values as sorted lists.
pub fn canonical(doc: &Value) -> Value {
    let Value::Object(map) = doc else {
        return doc.clone();
    };
    let mut out = Map::new();
    for (k, v) in map {
        let v = if k == "Statement" {
            let statements = match v {
                Value::Array(items) => items.clone(),
                other => vec![other.clone()],
            };
            Value::Array(statements.iter().map(statement).collect())
        } else {
            v.clone()
        };
        out.insert(k.clone(), v);
    }
    Value::Object(out)
}

fn statement(s: &Value) -> Value {
    let Value::Object(map) = s else {
        return s.clone();
    };
    let mut out = Map::new();
    for (k, v) in map {
        let v = if SET_KEYS.contains(&k.as_str()) {
            set(v)
        } else if k == "Principal" || k == "NotPrincipal" {
            match v {
                Value::Object(p) => {
                    Value::Object(p.iter().map(|(pk, pv)| (pk.clone(), set(pv))).collect())
                }
                other => other.clone(),
            }
        } else if k == "Condition" {
            match v {
                Value::Object(ops) => Value::Object(
                    ops.iter()
                        .map(|(op, keys)| {
                            let keys = match keys {
                                Value::Object(k) => Value::Object(
                                    k.iter().map(|(ck, cv)| (ck.clone(), set(cv))).collect(),
                                ),
                                other => other.clone(),
                            };
                            (op.clone(), keys)
                        })
                        .collect(),
                ),
                other => other.clone(),
            }
        } else {
            v.clone()
        };
        out.insert(k.clone(), v);
    }
    Value::Object(out)
}

fn set(v: &Value) -> Value {
    let mut items: Vec<Value> = match v {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    items.sort_by_key(|x| x.to_string());
    items.dedup();
    Value::Array(items)
}

/// Whether two documents mean the same to IAM.
pub fn same(a: &Value, b: &Value) -> bool {
    canonical(a) == canonical(b)
}

/// What to report as the live document: the prior's own spelling when it
/// means the same, so a no-op never shows as a change; AWS's otherwise.
pub fn as_live(read: Value, prior: Option<&Value>) -> Value {
    match prior {
        Some(p) if same(p, &read) => p.clone(),
        _ => read,
    }
}

/// IAM returns documents URL-encoded.
pub fn decode(encoded: &str) -> Value {
    let text = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
    serde_json::from_str(&text).unwrap_or(Value::String(text.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn single_values_lists_and_order_do_not_matter() {
        let a = json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "s3:GetObject", "Resource": ["b", "a"]}});
        let b = json!({"Statement": [{"Resource": ["a", "b"], "Action": ["s3:GetObject"], "Effect": "Allow"}], "Version": "2012-10-17"});
        assert!(same(&a, &b));
        let c = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "s3:GetObject", "Resource": ["a", "b"]}]});
        assert!(!same(&a, &c));
    }

    #[test]
    fn principals_and_conditions_are_sets_too() {
        let a = json!({"Statement": [{"Principal": {"Service": "ec2.amazonaws.com"}, "Condition": {"StringEquals": {"k": "v"}}}]});
        let b = json!({"Statement": [{"Principal": {"Service": ["ec2.amazonaws.com"]}, "Condition": {"StringEquals": {"k": ["v"]}}}]});
        assert!(same(&a, &b));
        assert_eq!(as_live(b.clone(), Some(&a)), a);
        let other = json!({"Statement": []});
        assert_eq!(as_live(other.clone(), Some(&a)), other);
    }

    #[test]
    fn decodes_url_encoded_documents() {
        assert_eq!(
            decode("%7B%22Version%22%3A%222012-10-17%22%7D"),
            json!({"Version": "2012-10-17"})
        );
    }
}
