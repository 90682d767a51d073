//! Rendering an environment's overlay: `kubectl kustomize`, then the deploy
//! stage's rules on what it rendered — every container of the app pinned to
//! the image by digest, everything in the environment's namespace, the
//! release's labels on every object.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use super::DeployError;

/// The oldest kubectl whose kustomize reads the reference overlays
/// (`labels:` needs kustomize 4.1, in kubectl 1.22).
const MIN_KUBECTL_MINOR: u64 = 22;

/// Where the pod spec sits in each workload kind.
fn pod_spec_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some("/spec/template/spec")
        }
        "CronJob" => Some("/spec/jobTemplate/spec/template/spec"),
        "Pod" => Some("/spec"),
        _ => None,
    }
}

/// Checks that kubectl exists and is new enough, then renders `overlay`.
pub fn kustomize(overlay: &Path) -> Result<String, DeployError> {
    let kubectl = crate::env::kubectl();
    let version = Command::new(&kubectl)
        .args(["version", "--client", "-o", "json"])
        .output()
        .map_err(|e| DeployError::Kubectl {
            message: format!("cannot run `{kubectl}`: {e}"),
            hint: format!(
                "install kubectl 1.{MIN_KUBECTL_MINOR} or newer (slipway renders overlays with its built-in kustomize), or point {} at it",
                crate::env::KUBECTL
            ),
        })?;
    let info: Value = serde_json::from_slice(&version.stdout).unwrap_or(Value::Null);
    let minor = info
        .pointer("/clientVersion/minor")
        .and_then(Value::as_str)
        .map(|m| m.trim_end_matches('+'))
        .and_then(|m| m.parse::<u64>().ok());
    let major = info.pointer("/clientVersion/major").and_then(Value::as_str);
    match (major, minor) {
        (Some("1"), Some(m)) if m >= MIN_KUBECTL_MINOR => {}
        (Some(major), Some(m)) if major != "1" || m < MIN_KUBECTL_MINOR => {
            return Err(DeployError::Kubectl {
                message: format!(
                    "`{kubectl}` is version {major}.{m}; slipway needs kubectl 1.{MIN_KUBECTL_MINOR} or newer to render overlays"
                ),
                hint: "install a current kubectl (its built-in kustomize renders the overlay)"
                    .into(),
            });
        }
        _ => {
            return Err(DeployError::Kubectl {
                message: format!(
                    "`{kubectl} version --client -o json` did not say its version ({})",
                    String::from_utf8_lossy(&version.stderr).trim()
                ),
                hint: format!("install kubectl 1.{MIN_KUBECTL_MINOR} or newer"),
            });
        }
    }
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .arg(overlay)
        .output()
        .map_err(|e| DeployError::Kubectl {
            message: format!("cannot run `{kubectl} kustomize`: {e}"),
            hint: "check the kubectl installation".into(),
        })?;
    if !out.status.success() {
        return Err(DeployError::Kubectl {
            message: format!(
                "`kubectl kustomize {}` failed: {}",
                overlay.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            hint: "fix the overlay; `kubectl kustomize DIR` shows the same error".into(),
        });
    }
    String::from_utf8(out.stdout).map_err(|e| DeployError::Kubectl {
        message: format!("`kubectl kustomize` printed something that is not UTF-8: {e}"),
        hint: "check the overlay's files".into(),
    })
}

/// The objects of a multi-document YAML stream (empty documents skipped).
pub fn parse(yaml: &str) -> Result<Vec<Value>, DeployError> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = Value::deserialize(doc).map_err(|e| DeployError::Rendered {
            message: format!("the rendered overlay is not valid YAML: {e}"),
        })?;
        if v.is_null() {
            continue;
        }
        if v.get("kind").and_then(Value::as_str) == Some("List") {
            out.extend(v["items"].as_array().cloned().unwrap_or_default());
        } else {
            out.push(v);
        }
    }
    Ok(out)
}

/// What the rules need to know.
pub struct Pin<'a> {
    /// `ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME`
    pub repository_uri: &'a str,
    /// The repository's name (`smallcase/app`).
    pub repository: &'a str,
    pub digest: &'a str,
    pub namespace: &'a str,
    /// Labels every object gets.
    pub labels: &'a [(String, String)],
}

/// An object's `Kind/name` for messages.
pub fn describe(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj.get("kind").and_then(Value::as_str).unwrap_or("?"),
        obj.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?")
    )
}

/// Whether a container image is the application's: the placeholder named
/// like the repository's last segment (`app`), the repository's name, or
/// its URI, with any tag or digest.
fn is_app_image(image: &str, pin: &Pin<'_>) -> bool {
    let name = image.split('@').next().unwrap_or(image);
    let name = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    };
    let short = pin.repository.rsplit('/').next().unwrap_or(pin.repository);
    name == short || name == pin.repository || name == pin.repository_uri
}

/// What [`prepare`] did to the images.
#[derive(Debug, Default)]
pub struct Pinned {
    /// Containers now running the application image by digest.
    pub count: usize,
    /// `Kind/name container: image` of other images not pinned by digest,
    /// which may change under the same release.
    pub unpinned: Vec<String>,
}

/// Applies the rules to the rendered objects. Refuses an object for another
/// namespace; cluster-scoped objects are refused by the caller, which asks
/// the API server.
pub fn prepare(objects: &mut [Value], pin: &Pin<'_>) -> Result<Pinned, DeployError> {
    let image = format!("{}@{}", pin.repository_uri, pin.digest);
    let mut pinned = 0;
    let mut unpinned = Vec::new();
    for obj in objects.iter_mut() {
        let what = describe(obj);
        if !obj.is_object()
            || obj.get("apiVersion").and_then(Value::as_str).is_none()
            || obj.get("kind").and_then(Value::as_str).is_none()
            || obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .is_none()
        {
            return Err(DeployError::Rendered {
                message: format!(
                    "the overlay renders an object without apiVersion, kind or metadata.name ({what})"
                ),
            });
        }
        match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
            Some(ns) if ns != pin.namespace => {
                return Err(DeployError::Rendered {
                    message: format!(
                        "the overlay puts {what} in namespace `{ns}`; this environment deploys only into `{}`",
                        pin.namespace
                    ),
                });
            }
            _ => obj["metadata"]["namespace"] = json!(pin.namespace),
        }
        let md = &mut obj["metadata"];
        if !md.get("labels").is_some_and(Value::is_object) {
            md["labels"] = json!({});
        }
        for (k, v) in pin.labels {
            md["labels"][k] = json!(v);
        }
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        let Some(pointer) = pod_spec_pointer(&kind) else {
            continue;
        };
        let Some(spec) = obj.pointer_mut(pointer) else {
            continue;
        };
        for list in ["initContainers", "containers"] {
            for c in spec
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let app = c
                    .get("image")
                    .and_then(Value::as_str)
                    .is_some_and(|i| is_app_image(i, pin));
                if app {
                    c["image"] = json!(image);
                    pinned += 1;
                } else if let Some(other) = c.get("image").and_then(Value::as_str)
                    && !other.contains("@sha256:")
                {
                    unpinned.push(format!(
                        "{what} container `{}`: `{other}`",
                        c.get("name").and_then(Value::as_str).unwrap_or("?")
                    ));
                }
            }
        }
    }
    if pinned == 0 {
        return Err(DeployError::Rendered {
            message: format!(
                "no container in the rendered overlay uses the application image (`{}`, `{}` or `{}`), so there is nothing to pin to `{}`",
                pin.repository.rsplit('/').next().unwrap_or(pin.repository),
                pin.repository,
                pin.repository_uri,
                pin.digest
            ),
        });
    }
    Ok(Pinned {
        count: pinned,
        unpinned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin<'a>(labels: &'a [(String, String)]) -> Pin<'a> {
        Pin {
            repository_uri: "123456789012.dkr.ecr.ap-south-1.amazonaws.com/smallcase/app",
            repository: "smallcase/app",
            digest: "sha256:abc",
            namespace: "smallcase-develop",
            labels,
        }
    }

    const RENDERED: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: app
  namespace: smallcase-develop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: smallcase/app:develop-1
      containers:
        - name: app
          image: app:latest
        - name: proxy
          image: public.ecr.aws/nginx/nginx:1.27
"#;

    #[test]
    fn app_containers_are_pinned_by_digest_and_others_left_alone() {
        let labels = vec![("slipway.dev/release".to_string(), "3".to_string())];
        let mut objs = parse(RENDERED).unwrap();
        let done = prepare(&mut objs, &pin(&labels)).unwrap();
        assert_eq!(done.count, 2);
        assert_eq!(
            done.unpinned,
            vec!["Deployment/app container `proxy`: `public.ecr.aws/nginx/nginx:1.27`"]
        );
        let d = &objs[1];
        let want = "123456789012.dkr.ecr.ap-south-1.amazonaws.com/smallcase/app@sha256:abc";
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            want
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["initContainers"][0]["image"],
            want
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][1]["image"],
            "public.ecr.aws/nginx/nginx:1.27"
        );
        assert_eq!(d["metadata"]["namespace"], "smallcase-develop");
        assert_eq!(d["metadata"]["labels"]["slipway.dev/release"], "3");
    }

    #[test]
    fn another_namespace_is_refused() {
        let mut objs = parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: kube-system}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: app}]}\n").unwrap();
        let e = prepare(&mut objs, &pin(&[])).unwrap_err().to_string();
        assert!(
            e.contains("ConfigMap/x") && e.contains("kube-system"),
            "{e}"
        );
    }

    #[test]
    fn an_overlay_without_the_app_image_is_refused() {
        let mut objs = parse("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: 'busybox:1'}]}\n").unwrap();
        let e = prepare(&mut objs, &pin(&[])).unwrap_err().to_string();
        assert!(e.contains("nothing to pin"), "{e}");
    }

    #[test]
    fn registry_ports_are_not_tags() {
        let p = pin(&[]);
        assert!(is_app_image("app:1", &p));
        assert!(is_app_image(
            "123456789012.dkr.ecr.ap-south-1.amazonaws.com/smallcase/app@sha256:x",
            &p
        ));
        assert!(!is_app_image("localhost:5000/other", &p));
        assert!(!is_app_image("apps", &p));
    }
}
