//! The Kubernetes provider: every `k8s.*` resource is one object, written
//! with server-side apply under the field manager `slipway`, so writes are
//! idempotent and fields other managers own are left to them.
//!
//! The connection comes from the EKS cluster itself (endpoint and CA from
//! `DescribeCluster`, a bearer token signed in-process from the caller's AWS
//! credentials and refreshed before it expires), or from a kubeconfig given
//! explicitly with `--kubeconfig`/`SLIPWAY_KUBECONFIG`; never from the user's
//! current context. It is made on first use, so a plan of an empty stack
//! needs no cluster.

pub mod app;
mod kinds;
mod retry;
pub mod token;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use serde_json::{Value, json};

use super::{DiscoverScope, Discovery, Fronts, OpContext, Provider, ProviderError, Tagged};
use crate::addr::Address;
use crate::resource::{Attrs, Live};

/// The field manager of everything slipway applies.
pub const FIELD_MANAGER: &str = "slipway";

/// How long refused credentials are asked again before slipway gives up.
const REFUSAL_GRACE: Duration = Duration::from_secs(16);

/// The error code of a connection through an EKS cluster that does not exist.
const CLUSTER_GONE: &str = "ClusterNotFound";

/// The label every object slipway creates carries, naming its stack.
pub const STACK_LABEL: &str = "slipway.dev/stack";

/// The annotation that joins an Ingress to an IngressGroup (one load
/// balancer for all its members).
pub const INGRESS_GROUP_ANNOTATION: &str = "alb.ingress.kubernetes.io/group.name";

/// The kinds slipway creates, for finding objects the state lost:
/// (apiVersion, kind, catalog kind).
const DISCOVERABLE: &[(&str, &str, &str)] = &[
    ("v1", "Namespace", "namespace"),
    ("v1", "ServiceAccount", "service_account"),
    ("v1", "Secret", "secret"),
    ("v1", "Service", "service"),
    ("apps/v1", "Deployment", "deployment"),
    ("rbac.authorization.k8s.io/v1", "Role", "role"),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "role_binding",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "cluster_role",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "cluster_role_binding",
    ),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition", "crd"),
    (
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        "mutating_webhook_configuration",
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        "validating_webhook_configuration",
    ),
    ("networking.k8s.io/v1", "IngressClass", "ingress_class"),
    (
        "elbv2.k8s.aws/v1beta1",
        "IngressClassParams",
        "ingress_class_params",
    ),
];

/// Where the cluster's API is.
#[derive(Clone)]
pub enum Connection {
    /// An explicit kubeconfig file (its current context).
    Kubeconfig(PathBuf),
    /// The stack's EKS cluster, found with `DescribeCluster`.
    Eks {
        cluster: String,
        region: String,
        config: Box<aws_types::SdkConfig>,
    },
}

/// The Kubernetes provider.
pub struct KubeProvider {
    connection: Connection,
    /// The client of the current connection, with the generation it was
    /// made in.
    client: tokio::sync::Mutex<Option<(u64, (kube::Client, String))>>,
    /// Bumped when the cluster changes: the next call connects anew.
    generation: AtomicU64,
    /// The EKS cluster connected through, when the state names another than
    /// the stack (a renamed cluster, until its replacement exists).
    cluster: Mutex<Option<String>>,
    /// The cluster as last observed (name and endpoint).
    observed_cluster: Mutex<Option<(String, Option<Value>)>>,
    /// The EKS cluster's endpoint and certificate authority as last
    /// observed (the state's record, or what apply made): a connection
    /// there starts beside DescribeCluster, and is kept when the cluster
    /// says it is still there.
    recorded_endpoint: Mutex<Option<(String, Vec<u8>)>>,
    /// What the cluster serves, shared with the deploy stage's clusters.
    kinds: std::sync::Arc<kinds::Kinds>,
    /// The cluster refused the credentials (remembered for the run).
    refused: Mutex<Option<ProviderError>>,
    /// Keeps the token file alive while the client may read it.
    _token_dir: Mutex<Option<tempfile::TempDir>>,
    /// How long a namespace may take to terminate, in milliseconds.
    namespace_timeout_ms: AtomicU64,
}

/// How long a namespace may take to terminate unless told otherwise.
pub const NAMESPACE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Kinds whose finalizers commonly hold a namespace in `Terminating`,
/// looked at when one takes too long (those the cluster does not serve are
/// skipped).
const FINALIZED_KINDS: &[(&str, &str)] = &[
    ("networking.k8s.io/v1", "Ingress"),
    ("v1", "Service"),
    ("elbv2.k8s.aws/v1beta1", "TargetGroupBinding"),
    ("v1", "PersistentVolumeClaim"),
    ("v1", "Pod"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "ReplicaSet"),
    ("batch/v1", "Job"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "ServiceAccount"),
    ("coordination.k8s.io/v1", "Lease"),
];

fn err(addr: &Address, code: &str, message: impl Into<String>, retryable: bool) -> ProviderError {
    ProviderError::new(addr, code, message, retryable)
}

/// A Kubernetes API error as a per-resource failure.
fn api_error(addr: &Address, op: &str, e: &kube::Error) -> ProviderError {
    match e {
        kube::Error::Api(s) => {
            let retryable = matches!(s.code, 409 | 429 | 500..=599) && s.reason != "AlreadyExists";
            err(
                addr,
                &s.reason,
                format!("{op}: {} (HTTP {})", s.message, s.code),
                retryable,
            )
        }
        other => err(
            addr,
            "KubernetesUnreachable",
            format!("{op}: {other}"),
            true,
        ),
    }
}

fn unserved(addr: &Address, kind: &str, api_version: &str) -> ProviderError {
    err(
        addr,
        "KindUnknown",
        format!(
            "the API server does not serve `{kind}` in `{api_version}` (yet: a CRD may still be being established)"
        ),
        true,
    )
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The parts of `live` that `template` has: the fields slipway manages.
/// Fields defaulted by the API server or written by controllers are left
/// out, so they never show as changes.
pub fn project(live: &Value, template: &Value) -> Value {
    project_at(None, live, template)
}

/// How a list is merged by server-side apply, from the field holding it:
/// `Some(key)` for the lists the Kubernetes API declares as maps
/// (`x-kubernetes-list-type: map`), whose other items belong to other
/// managers; `None` for atomic lists, which slipway owns whole.
fn list_key(field: Option<&str>) -> Option<fn(&Value) -> Option<String>> {
    fn by_name(v: &Value) -> Option<String> {
        v.get("name").and_then(Value::as_str).map(str::to_string)
    }
    fn by_mount_path(v: &Value) -> Option<String> {
        v.get("mountPath")
            .and_then(Value::as_str)
            .map(str::to_string)
    }
    // Container ports by containerPort and protocol, Service ports by port
    // and protocol.
    fn by_port(v: &Value) -> Option<String> {
        let port = v.get("containerPort").or_else(|| v.get("port"))?;
        let protocol = v.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        Some(format!("{port}/{protocol}"))
    }
    match field? {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "webhooks"
        | "imagePullSecrets" => Some(by_name),
        "volumeMounts" => Some(by_mount_path),
        "ports" => Some(by_port),
        _ => None,
    }
}

fn project_at(field: Option<&str>, live: &Value, template: &Value) -> Value {
    match (live, template) {
        (Value::Object(l), Value::Object(t)) => Value::Object(
            t.keys()
                .filter_map(|k| l.get(k).map(|v| (k.clone(), project_at(Some(k), v, &t[k]))))
                .collect(),
        ),
        (Value::Array(l), Value::Array(t)) => match list_key(field) {
            // A map-type list: the template's items, found by key.
            Some(key) if t.iter().all(|x| key(x).is_some()) => Value::Array(
                t.iter()
                    .filter_map(|tx| {
                        let k = key(tx);
                        l.iter()
                            .find(|lx| key(lx) == k)
                            .map(|lx| project_at(None, lx, tx))
                    })
                    .collect(),
            ),
            // An atomic list: item by item when the lengths agree (the
            // server may default fields inside items), otherwise all of it,
            // so an item someone added or removed shows.
            _ if l.len() == t.len() => Value::Array(
                l.iter()
                    .zip(t)
                    .map(|(lx, tx)| project_at(None, lx, tx))
                    .collect(),
            ),
            _ => live.clone(),
        },
        _ => live.clone(),
    }
}

impl Connection {
    /// Through the stack's EKS cluster, with the AWS provider's credentials.
    pub fn eks(aws: &crate::provider::aws::AwsProvider, cluster: &str, region: &str) -> Self {
        Connection::Eks {
            cluster: cluster.to_string(),
            region: region.to_string(),
            config: Box::new(aws.sdk_config().clone()),
        }
    }
}

impl KubeProvider {
    pub fn new(connection: Connection) -> Self {
        KubeProvider {
            connection,
            client: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            cluster: Mutex::new(None),
            observed_cluster: Mutex::new(None),
            recorded_endpoint: Mutex::new(None),
            kinds: std::sync::Arc::default(),
            refused: Mutex::new(None),
            _token_dir: Mutex::new(None),
            namespace_timeout_ms: AtomicU64::new(NAMESPACE_TIMEOUT.as_millis() as u64),
        }
    }

    /// How long deleting a namespace waits for it to be gone.
    pub fn set_namespace_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.namespace_timeout_ms.store(ms, Ordering::SeqCst);
    }

    fn namespace_timeout(&self) -> Duration {
        Duration::from_millis(self.namespace_timeout_ms.load(Ordering::SeqCst))
    }

    /// What keeps namespace `ns` terminating: the conditions the API
    /// server reports, its own finalizers, and each object left in it with
    /// a finalizer, as `Kind `ns/name` (finalizer …)`.
    async fn blocking(&self, addr: &Address, client: &kube::Client, ns: &Value) -> Vec<String> {
        let name = ns
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut out: Vec<String> = ns
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| c.get("status").and_then(Value::as_str) == Some("True"))
            .filter_map(|c| c.get("message").and_then(Value::as_str))
            .map(str::to_string)
            .collect();
        let own: Vec<&str> = ["/metadata/finalizers", "/spec/finalizers"]
            .iter()
            .filter_map(|p| ns.pointer(p).and_then(Value::as_array))
            .flatten()
            .filter_map(Value::as_str)
            .filter(|f| *f != "kubernetes")
            .collect();
        if !own.is_empty() {
            out.push(format!(
                "the namespace itself has finalizer(s) `{}`",
                own.join("`, `")
            ));
        }
        for (api_version, kind) in FINALIZED_KINDS {
            let manifest = json!({"apiVersion": api_version, "kind": kind});
            let Ok((ar, _)) = self.resource(addr, client, &manifest).await else {
                continue;
            };
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), name, &ar);
            let Ok(list) = api.list(&kube::api::ListParams::default()).await else {
                continue;
            };
            for obj in list {
                let finalizers = obj.metadata.finalizers.clone().unwrap_or_default();
                if !finalizers.is_empty() {
                    out.push(format!(
                        "{kind} `{name}/{}` waits on finalizer `{}`",
                        obj.metadata.name.as_deref().unwrap_or_default(),
                        finalizers.join("`, `")
                    ));
                }
            }
        }
        out
    }

    /// The cluster, scoped to `namespace`, for the deploy stage's own
    /// objects; connects as for the platform's objects.
    pub async fn app_cluster(&self, namespace: &str) -> Result<app::AppCluster, ProviderError> {
        let addr = app::object_addr("namespace", namespace, namespace);
        let (client, _) = self.client(&addr).await?;
        Ok(app::AppCluster::new(
            client.clone(),
            namespace,
            self.kinds.clone(),
        ))
    }

    /// Everything in the cluster the load balancer controller makes load
    /// balancers for: each Ingress (and the IngressGroup it joins) and each
    /// `LoadBalancer` Service, in every namespace. Read-only.
    pub async fn fronted(&self) -> Result<BTreeSet<Fronts>, ProviderError> {
        let probe = Address::domain_wide(crate::addr::Domain::K8s);
        let (client, _) = self.client(&probe).await?;
        let mut out = BTreeSet::new();
        for (api_version, kind) in [("networking.k8s.io/v1", "Ingress"), ("v1", "Service")] {
            let manifest = json!({"apiVersion": api_version, "kind": kind});
            let (ar, _) = self.resource(&probe, &client, &manifest).await?;
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            let list = api
                .list(&kube::api::ListParams::default())
                .await
                .map_err(|e| api_error(&probe, &format!("list {kind}"), &e))?;
            for obj in list {
                let id = format!(
                    "{}/{}",
                    obj.metadata.namespace.as_deref().unwrap_or_default(),
                    obj.metadata.name.as_deref().unwrap_or_default()
                );
                if kind == "Ingress" {
                    if let Some(group) = obj
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(INGRESS_GROUP_ANNOTATION))
                    {
                        out.insert(Fronts::IngressGroup(group.clone()));
                    }
                    out.insert(Fronts::Ingress(id));
                } else if obj.data.pointer("/spec/type").and_then(Value::as_str)
                    == Some("LoadBalancer")
                {
                    out.insert(Fronts::Service(id));
                }
            }
        }
        Ok(out)
    }

    /// The client, connecting on first use; the string names the endpoint
    /// and credential for error messages.
    async fn client(&self, addr: &Address) -> Result<(kube::Client, String), ProviderError> {
        // Refused credentials stay refused for this run: say so once per
        // object without asking again.
        if let Some(e) = self.refused.lock().ok().and_then(|r| r.clone()) {
            return Err(ProviderError::new(addr, &e.code, e.message, false));
        }
        // One connection attempt at a time; the others wait and share it.
        let mut slot = self.client.lock().await;
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some((g, client)) = slot.as_ref()
            && *g == generation
        {
            return Ok(client.clone());
        }
        // Another object may have been refused while this one waited.
        if let Some(e) = self.refused.lock().ok().and_then(|r| r.clone()) {
            return Err(ProviderError::new(addr, &e.code, e.message, false));
        }
        let connected = self.connect(addr).await;
        if let Err(e) = &connected
            && e.code == "KubernetesUnauthorized"
            && let Ok(mut r) = self.refused.lock()
        {
            *r = Some(e.clone());
        }
        let client = connected?;
        *slot = Some((generation, client.clone()));
        Ok(client)
    }

    /// Forgets the connection and what the cluster served: the next call
    /// connects to the cluster as it is now.
    fn reconnect(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.kinds.clear();
        if let Ok(mut refused) = self.refused.lock() {
            *refused = None;
        }
    }

    async fn connect(&self, addr: &Address) -> Result<(kube::Client, String), ProviderError> {
        let config = match &self.connection {
            Connection::Kubeconfig(path) => {
                let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                    err(
                        addr,
                        "KubeconfigInvalid",
                        format!("`{}`: {e}", path.display()),
                        false,
                    )
                })?;
                let config = kube::Config::from_custom_kubeconfig(
                    kc,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .map_err(|e| {
                    err(
                        addr,
                        "KubeconfigInvalid",
                        format!("`{}`: {e}", path.display()),
                        false,
                    )
                })?;
                let about = format!("{} (kubeconfig `{}`)", config.cluster_url, path.display());
                (config, about)
            }
            Connection::Eks {
                cluster,
                region,
                config,
            } => {
                let cluster = self
                    .cluster
                    .lock()
                    .ok()
                    .and_then(|c| c.clone())
                    .unwrap_or_else(|| cluster.clone());
                return self.eks_connect(addr, &cluster, region, config).await;
            }
        };
        self.checked(addr, config).await
    }

    /// Connects to the EKS cluster where DescribeCluster says it is. Where
    /// the endpoint and CA are known already (the state's record), the
    /// connection there — signing a token, the TLS handshake, `/version` —
    /// goes beside DescribeCluster and is kept when the cluster turns out
    /// to be there still, so the cluster's first reads wait for one round
    /// trip instead of two; when it moved, the connection is made anew.
    async fn eks_connect(
        &self,
        addr: &Address,
        cluster: &str,
        region: &str,
        sdk: &aws_types::SdkConfig,
    ) -> Result<(kube::Client, String), ProviderError> {
        let recorded = self.recorded_endpoint.lock().ok().and_then(|r| r.clone());
        let described = self.describe_cluster(addr, cluster, sdk);
        let at = |endpoint: String, ca: Vec<u8>| async move {
            let (config, dir) = self
                .eks_client_config(addr, cluster, region, sdk, &endpoint, &ca)
                .await?;
            let connected = self.checked(addr, config).await?;
            Ok::<_, ProviderError>((connected, dir))
        };
        let keep = |(connected, dir)| {
            if let Ok(mut slot) = self._token_dir.lock() {
                *slot = Some(dir);
            }
            connected
        };
        let Some((recorded_endpoint, recorded_ca)) = recorded else {
            let (endpoint, ca) = described.await?;
            return at(endpoint, ca).await.map(keep);
        };
        let early = at(recorded_endpoint.clone(), recorded_ca.clone());
        tokio::pin!(described, early);
        let mut connected_early = None;
        let (endpoint, ca) = loop {
            tokio::select! {
                d = &mut described => break d?,
                c = &mut early, if connected_early.is_none() => connected_early = Some(c),
            }
        };
        if endpoint == recorded_endpoint && ca == recorded_ca {
            return match connected_early {
                Some(c) => c,
                None => early.await,
            }
            .map(keep);
        }
        at(endpoint, ca).await.map(keep)
    }

    /// A client of `config`, once one cheap call showed the API server
    /// answers and accepts the credentials.
    async fn checked(
        &self,
        addr: &Address,
        config: (kube::Config, String),
    ) -> Result<(kube::Client, String), ProviderError> {
        let (mut config, about) = config;
        // A bounded retry of busy answers in place of kube's (see `retry`).
        config.default_retry = false;
        let client = kube::client::ClientBuilder::try_from(config)
            .map(|builder| {
                builder
                    .with_layer(&tower::buffer::BufferLayer::new(1024))
                    .with_layer(&tower::retry::RetryLayer::new(retry::Busy::default()))
                    .build()
            })
            .map_err(|e| {
                err(
                    addr,
                    "KubernetesUnreachable",
                    format!("{about}: {e}"),
                    false,
                )
            })?;
        // One cheap call now, so an unreachable cluster is one clear error.
        // A refusal is asked again for a little while: a new access entry
        // takes some seconds to be honoured.
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_secs(1);
        let version = loop {
            match client.apiserver_version().await {
                Err(kube::Error::Api(s))
                    if (s.code == 401 || s.code == 403)
                        && started.elapsed() + pause < REFUSAL_GRACE =>
                {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                other => break other,
            }
        };
        match version {
            Ok(_) => Ok((client, about)),
            Err(kube::Error::Api(s)) if s.code == 401 || s.code == 403 => {
                let who = self.caller().await;
                let hint = match &self.connection {
                    Connection::Eks { cluster, .. } => format!(
                        "{who} has no access to EKS cluster `{cluster}`: only the identity that created it is given admin access automatically; list this identity's IAM role or user ARN in the stack's `[cluster] admins` and apply as the creator, or give it an access entry with the AmazonEKSClusterAdminPolicy yourself (`aws eks create-access-entry` and `aws eks associate-access-policy`)"
                    ),
                    Connection::Kubeconfig(path) => format!(
                        "the credentials of kubeconfig `{}` were refused",
                        path.display()
                    ),
                };
                Err(err(
                    addr,
                    "KubernetesUnauthorized",
                    format!(
                        "the Kubernetes API at {about} refused the request (HTTP {}: {}); {hint}",
                        s.code, s.message
                    ),
                    false,
                ))
            }
            Err(e) => Err(err(
                addr,
                "KubernetesUnreachable",
                format!("cannot reach the Kubernetes API at {about}: {e}"),
                true,
            )),
        }
    }

    /// Who the AWS credentials belong to, for an access error: the caller's
    /// ARN when STS says, else a neutral phrase.
    async fn caller(&self) -> String {
        let Connection::Eks { config, .. } = &self.connection else {
            return "this identity".to_string();
        };
        match aws_sdk_sts::Client::new(config)
            .get_caller_identity()
            .send()
            .await
        {
            Ok(out) => out.arn().map_or("this AWS identity".to_string(), |a| {
                format!("AWS identity `{a}`")
            }),
            Err(_) => "this AWS identity".to_string(),
        }
    }

    /// The EKS cluster's endpoint and certificate authority (DER or PEM
    /// bytes), or why it cannot be reached (`CLUSTER_GONE` when it does not
    /// exist or is being deleted).
    async fn describe_cluster(
        &self,
        addr: &Address,
        cluster: &str,
        sdk: &aws_types::SdkConfig,
    ) -> Result<(String, Vec<u8>), ProviderError> {
        use base64::Engine as _;
        let eks = aws_sdk_eks::Client::new(sdk);
        let out = eks
            .describe_cluster()
            .name(cluster)
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_not_found_exception())
                {
                    return err(
                        addr,
                        CLUSTER_GONE,
                        format!(
                            "EKS cluster `{cluster}` does not exist, so neither does anything in it; apply creates the cluster before its Kubernetes objects"
                        ),
                        false,
                    );
                }
                err(
                    addr,
                    "ClusterUnavailable",
                    format!(
                        "cannot describe EKS cluster `{cluster}`: {}",
                        aws_smithy_types::error::display::DisplayErrorContext(&e)
                    ),
                    true,
                )
            })?;
        let c = out.cluster().ok_or_else(|| {
            err(
                addr,
                "ClusterUnavailable",
                format!("EKS cluster `{cluster}` does not exist"),
                false,
            )
        })?;
        // A cluster being deleted is as good as gone, for the AWS provider
        // too: what is in it goes with it.
        if c.status() == Some(&aws_sdk_eks::types::ClusterStatus::Deleting) {
            return Err(err(
                addr,
                CLUSTER_GONE,
                format!("EKS cluster `{cluster}` is being deleted, and everything in it with it"),
                false,
            ));
        }
        let endpoint = c.endpoint().ok_or_else(|| {
            err(
                addr,
                "ClusterUnavailable",
                format!(
                    "EKS cluster `{cluster}` has no endpoint yet (status {:?})",
                    c.status()
                ),
                true,
            )
        })?;
        let ca = c
            .certificate_authority()
            .and_then(|ca| ca.data())
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
            .ok_or_else(|| {
                err(
                    addr,
                    "ClusterUnavailable",
                    format!("EKS cluster `{cluster}` has no certificate authority"),
                    false,
                )
            })?;
        Ok((endpoint.to_string(), ca))
    }

    /// A client configuration for the EKS cluster at `endpoint`, with a
    /// bearer token signed from the AWS credentials (kept fresh in a file
    /// in the directory returned, which must live as long as the client).
    async fn eks_client_config(
        &self,
        addr: &Address,
        cluster: &str,
        region: &str,
        sdk: &aws_types::SdkConfig,
        endpoint: &str,
        ca: &[u8],
    ) -> Result<((kube::Config, String), tempfile::TempDir), ProviderError> {
        use aws_credential_types::provider::ProvideCredentials;
        let provider = sdk.credentials_provider().ok_or_else(|| {
            err(
                addr,
                "NoCredentials",
                "no AWS credentials to sign the Kubernetes token with",
                false,
            )
        })?;
        let creds = provider
            .provide_credentials()
            .await
            .map_err(|e| err(addr, "NoCredentials", e.to_string(), false))?;
        // The token goes to a file the client re-reads, refreshed well
        // before EKS stops accepting it (15 minutes after signing).
        let dir = tempfile::tempdir().map_err(|e| err(addr, "TokenFile", e.to_string(), false))?;
        let path = dir.path().join("token");
        let write = |creds: &aws_credential_types::Credentials| -> Result<(), ProviderError> {
            let t = token::eks_token(cluster, region, creds, std::time::SystemTime::now())
                .map_err(|e| err(addr, "TokenError", e.to_string(), false))?;
            crate::state::local::write_atomic(&path, t.as_bytes())
                .map_err(|e| err(addr, "TokenFile", e.to_string(), false))
        };
        write(&creds)?;
        let refresh = (
            provider.clone(),
            path.clone(),
            cluster.to_string(),
            region.to_string(),
        );
        tokio::spawn(async move {
            let (provider, path, cluster, region) = refresh;
            loop {
                tokio::time::sleep(Duration::from_secs(5 * 60)).await;
                // Its directory goes with the client that read it (or with
                // a connection made and dropped): nothing to refresh.
                if !path.parent().is_some_and(std::path::Path::exists) {
                    break;
                }
                let Ok(creds) = provider.provide_credentials().await else {
                    continue;
                };
                if let Ok(t) =
                    token::eks_token(&cluster, &region, &creds, std::time::SystemTime::now())
                {
                    let _ = crate::state::local::write_atomic(&path, t.as_bytes());
                }
            }
        });
        let uri: http::Uri = endpoint.parse().map_err(|e| {
            err(
                addr,
                "ClusterUnavailable",
                format!("bad endpoint `{endpoint}`: {e}"),
                false,
            )
        })?;
        let mut config = kube::Config::new(uri);
        config.root_cert = Some(pem_certs(ca));
        config.auth_info.token_file = Some(path.display().to_string());
        let who = creds.access_key_id().to_string();
        Ok((
            (
                config,
                format!("{endpoint} (EKS cluster `{cluster}`, AWS access key `{who}`)"),
            ),
            dir,
        ))
    }

    /// The API resource of a manifest's apiVersion and kind, from discovery (cached).
    async fn resource(
        &self,
        addr: &Address,
        client: &kube::Client,
        manifest: &Value,
    ) -> Result<(ApiResource, ApiCapabilities), ProviderError> {
        let api_version = manifest
            .get("apiVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                err(
                    addr,
                    "InvalidManifest",
                    "the manifest has no apiVersion",
                    false,
                )
            })?;
        let kind = manifest
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| err(addr, "InvalidManifest", "the manifest has no kind", false))?;
        self.kinds
            .find(client, api_version, kind)
            .await
            .map_err(|e| api_error(addr, "discovery", &e))?
            .ok_or_else(|| unserved(addr, kind, api_version))
    }

    async fn api(
        &self,
        addr: &Address,
        manifest: &Value,
    ) -> Result<(Api<DynamicObject>, String), ProviderError> {
        let (client, _) = self.client(addr).await?;
        let (ar, caps) = self.resource(addr, &client, manifest).await?;
        let name = manifest
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                err(
                    addr,
                    "InvalidManifest",
                    "the manifest has no metadata.name",
                    false,
                )
            })?
            .to_string();
        let api = match caps.scope {
            Scope::Namespaced => {
                let ns = manifest
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                Api::namespaced_with(client.clone(), ns, &ar)
            }
            Scope::Cluster => Api::all_with(client.clone(), &ar),
        };
        Ok((api, name))
    }

    fn live_of(&self, addr: &Address, obj: &DynamicObject, template: &Value) -> Live {
        let full = serde_json::to_value(obj).unwrap_or(Value::Null);
        let uid = obj.metadata.uid.clone().unwrap_or_default();
        Live {
            id: addr.name().to_string(),
            attrs: [
                ("id".to_string(), json!(addr.name())),
                ("uid".to_string(), json!(uid)),
                ("manifest".to_string(), project(&full, template)),
            ]
            .into(),
        }
    }

    /// Applies, and for a Deployment waits for its rollout: the load
    /// balancer controller's webhooks are registered only once its pods
    /// serve them.
    async fn apply(
        &self,
        addr: &Address,
        manifest: &Value,
        ctx: &OpContext<'_>,
    ) -> Result<Live, ProviderError> {
        if let Some(services) = webhook_services(manifest) {
            for (ns, name) in services {
                self.wait_endpoints(addr, &ns, &name, ctx).await?;
            }
        }
        let live = self.apply_once(addr, manifest, ctx).await?;
        if addr.kind() == "deployment" {
            self.wait_rollout(addr, manifest, ctx).await?;
        }
        Ok(live)
    }

    /// Waits until the Service has a ready endpoint, by its EndpointSlices
    /// (`kubernetes.io/service-name`): a webhook registered before anything
    /// serves it makes the API server refuse every object it covers.
    async fn wait_endpoints(
        &self,
        addr: &Address,
        namespace: &str,
        service: &str,
        ctx: &OpContext<'_>,
    ) -> Result<(), ProviderError> {
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        let (client, _) = self.client(addr).await?;
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
        let lp = kube::api::ListParams::default()
            .labels(&format!("kubernetes.io/service-name={service}"));
        let started = tokio::time::Instant::now();
        loop {
            let slices = api
                .list(&lp)
                .await
                .map_err(|e| api_error(addr, "list EndpointSlices", &e))?;
            if slices.items.iter().any(has_ready_endpoint) {
                return Ok(());
            }
            if started.elapsed() >= ENDPOINTS_TIMEOUT {
                return Err(err(
                    addr,
                    "WebhookNotServed",
                    format!(
                        "the webhook service `{namespace}/{service}` still has no ready endpoint after {} minutes; check its pods (`kubectl -n {namespace} get endpointslices -l kubernetes.io/service-name={service}`)",
                        ENDPOINTS_TIMEOUT.as_secs() / 60
                    ),
                    true,
                ));
            }
            ctx.status(&format!(
                "waiting for a ready endpoint of the webhook service `{namespace}/{service}` ({}s)",
                started.elapsed().as_secs()
            ));
            tokio::time::sleep(poll_delay(started.elapsed())).await;
        }
    }

    async fn wait_rollout(
        &self,
        addr: &Address,
        manifest: &Value,
        ctx: &OpContext<'_>,
    ) -> Result<(), ProviderError> {
        let (api, name) = self.api(addr, manifest).await?;
        let started = tokio::time::Instant::now();
        loop {
            let obj = api
                .get(&name)
                .await
                .map_err(|e| api_error(addr, "get", &e))?;
            let v = serde_json::to_value(&obj).unwrap_or(Value::Null);
            match rollout(&v) {
                Rollout::Done => return Ok(()),
                Rollout::Failed(why) => return Err(err(addr, "RolloutFailed", why, false)),
                Rollout::Waiting(what) if started.elapsed() < Duration::from_secs(10 * 60) => {
                    ctx.status(&format!(
                        "rollout: {what} ({}s)",
                        started.elapsed().as_secs()
                    ));
                    tokio::time::sleep(poll_delay(started.elapsed())).await;
                }
                Rollout::Waiting(what) => {
                    return Err(err(
                        addr,
                        "RolloutTimeout",
                        format!("rollout not finished after 10 minutes: {what}"),
                        true,
                    ));
                }
            }
        }
    }

    /// Refuses to create over an object that exists and is not labelled as
    /// this stack's (a controller installed with Helm, a namespace made by
    /// hand): server-side apply with force would silently take it over.
    async fn refuse_foreign(&self, addr: &Address, manifest: &Value) -> Result<(), ProviderError> {
        let (api, name) = match self.api(addr, manifest).await {
            // A kind not served yet (its CRD is being created) has no objects.
            Err(e) if e.code == "KindUnknown" => return Ok(()),
            other => other?,
        };
        let existing = match api.get_opt(&name).await {
            Ok(Some(obj)) if obj.metadata.deletion_timestamp.is_none() => obj,
            Ok(_) => return Ok(()),
            Err(e) => return Err(api_error(addr, "get", &e)),
        };
        let ours = manifest
            .pointer("/metadata/labels")
            .and_then(|l| l.get(STACK_LABEL));
        let theirs = existing
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(STACK_LABEL));
        if ours.is_some() && ours.and_then(Value::as_str) == theirs.map(String::as_str) {
            return Ok(());
        }
        Err(err(
            addr,
            "AlreadyExists",
            foreign_message(addr, manifest, &existing),
            false,
        ))
    }

    async fn apply_once(
        &self,
        addr: &Address,
        manifest: &Value,
        ctx: &OpContext<'_>,
    ) -> Result<Live, ProviderError> {
        // A custom resource's kind is served only once its CRD (created just
        // before, by dependency) is established: ask discovery again meanwhile.
        let started = tokio::time::Instant::now();
        let (api, name) = loop {
            match self.api(addr, manifest).await {
                Err(e)
                    if e.code == "KindUnknown" && started.elapsed() < Duration::from_secs(60) =>
                {
                    ctx.status("waiting for the API server to serve this kind");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => break other?,
            }
        };
        // An object still being deleted (a namespace terminating after a
        // destroy) cannot be applied back to life: wait until it is gone.
        let started = tokio::time::Instant::now();
        loop {
            match api.get_opt(&name).await {
                Ok(Some(obj)) if obj.metadata.deletion_timestamp.is_some() => {
                    if started.elapsed() >= Duration::from_secs(15 * 60) {
                        return Err(err(
                            addr,
                            "DeletionTimeout",
                            format!(
                                "the previous `{name}` is still terminating after 15 minutes; a finalizer may be blocking it; run again once it is gone"
                            ),
                            true,
                        ));
                    }
                    ctx.status(&format!(
                        "waiting for the previous `{name}` to finish terminating ({}s)",
                        started.elapsed().as_secs()
                    ));
                    tokio::time::sleep(poll_delay(started.elapsed())).await;
                }
                Ok(_) => break,
                Err(e) => return Err(api_error(addr, "get", &e)),
            }
        }
        // Force: a field slipway manages that another manager took over
        // (kubectl edit, a script) is put back, as the plan said.
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let mut delay = Duration::from_millis(200);
        let started = tokio::time::Instant::now();
        loop {
            match api.patch(&name, &pp, &Patch::Apply(manifest)).await {
                Ok(obj) => return Ok(self.live_of(addr, &obj, manifest)),
                // A conflict, a webhook not serving yet, an API server
                // restarting: 409/429/5xx for a while.
                Err(e)
                    if started.elapsed() < Duration::from_secs(120)
                        && api_error(addr, "apply", &e).retryable =>
                {
                    ctx.status(&format!("the API server refused for now ({e}); retrying"));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(api_error(addr, "server-side apply", &e)),
            }
        }
    }
}

/// What an object made by someone else is, and what to do about it.
fn foreign_message(addr: &Address, manifest: &Value, existing: &DynamicObject) -> String {
    let kind = manifest
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("object");
    let managers: BTreeSet<String> = existing
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|f| f.manager.clone())
        .collect();
    let by = if managers.is_empty() {
        "no recorded field manager".to_string()
    } else {
        format!(
            "field managers: {}",
            managers.into_iter().collect::<Vec<_>>().join(", ")
        )
    };
    let owner = existing
        .metadata
        .labels
        .as_ref()
        .and_then(|l| {
            l.get("app.kubernetes.io/managed-by")
                .or_else(|| l.get(STACK_LABEL))
        })
        .map(|m| format!(", managed by `{m}`"))
        .unwrap_or_default();
    format!(
        "{kind} `{}` already exists and is not labelled as this stack's ({by}{owner}); slipway does not take over objects it did not make: adopt it with `slipway import {addr}`, or remove it",
        addr.name()
    )
}

/// How long to wait before asking the API server again, after waiting
/// `elapsed`: quick at first (most waits are short), then gentle on the
/// server during a long one.
fn poll_delay(elapsed: Duration) -> Duration {
    if elapsed < Duration::from_secs(10) {
        Duration::from_millis(250)
    } else if elapsed < Duration::from_secs(60) {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(3)
    }
}

/// How long a webhook's service may take to get a ready endpoint.
const ENDPOINTS_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The in-cluster services (namespace, name) the webhooks of a
/// Mutating/ValidatingWebhookConfiguration call; `None` for other kinds.
fn webhook_services(manifest: &Value) -> Option<BTreeSet<(String, String)>> {
    let kind = manifest.get("kind").and_then(Value::as_str)?;
    let group = manifest.get("apiVersion").and_then(Value::as_str)?;
    if !group.starts_with("admissionregistration.k8s.io/")
        || !matches!(
            kind,
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration"
        )
    {
        return None;
    }
    let hooks = manifest.get("webhooks").and_then(Value::as_array)?;
    Some(
        hooks
            .iter()
            .filter_map(|h| {
                let svc = h.pointer("/clientConfig/service")?;
                Some((
                    svc.get("namespace")?.as_str()?.to_string(),
                    svc.get("name")?.as_str()?.to_string(),
                ))
            })
            .collect(),
    )
}

/// Whether a slice has an endpoint with an address that is ready (an absent
/// `ready` condition means ready, per the EndpointSlice API).
fn has_ready_endpoint(slice: &k8s_openapi::api::discovery::v1::EndpointSlice) -> bool {
    slice.endpoints.iter().flatten().any(|e| {
        !e.addresses.is_empty() && e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
    })
}

/// Where a Deployment's rollout is, by the rules `kubectl rollout status` uses.
#[derive(Debug, PartialEq)]
pub enum Rollout {
    Done,
    Waiting(String),
    Failed(String),
}

pub fn rollout(d: &Value) -> Rollout {
    let n = |p: &str| d.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let generation = n("/metadata/generation");
    let observed = n("/status/observedGeneration");
    if observed < generation {
        return Rollout::Waiting("waiting for the controller to see the new spec".into());
    }
    let conditions = d
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(c) = conditions
        .iter()
        .find(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded")
    {
        return Rollout::Failed(format!(
            "the rollout exceeded its progress deadline: {}",
            c["message"].as_str().unwrap_or("")
        ));
    }
    let want = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let (updated, available, total) = (
        n("/status/updatedReplicas"),
        n("/status/availableReplicas"),
        n("/status/replicas"),
    );
    if updated < want {
        return Rollout::Waiting(format!("{updated} of {want} replicas updated"));
    }
    if total > updated {
        return Rollout::Waiting(format!(
            "{} old replicas pending termination",
            total - updated
        ));
    }
    if available < updated {
        return Rollout::Waiting(format!(
            "{available} of {updated} updated replicas available"
        ));
    }
    Rollout::Done
}

fn manifest_of<'a>(addr: &Address, attrs: &'a Attrs) -> Result<&'a Value, ProviderError> {
    attrs.get("manifest").ok_or_else(|| {
        err(
            addr,
            "InvalidManifest",
            "attribute `manifest` is missing",
            false,
        )
    })
}

/// PEM blocks of a CA bundle as DER certificates.
fn pem_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut body = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE") {
            inside = true;
            body.clear();
        } else if line.starts_with("-----END CERTIFICATE") {
            inside = false;
            if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body.trim()) {
                out.push(der);
            }
        } else if inside {
            body.push_str(line.trim());
        }
    }
    out
}

#[async_trait]
impl Provider for KubeProvider {
    async fn read(&self, addr: &Address, prior: &Live) -> Result<Option<Live>, ProviderError> {
        let manifest = manifest_of(addr, &prior.attrs)?;
        // A kind no longer served (its CRD deleted) has no objects left, nor
        // has a cluster that is gone.
        let (api, name) = match self.api(addr, manifest).await {
            Err(e) if e.code == "KindUnknown" || e.code == CLUSTER_GONE => return Ok(None),
            other => other?,
        };
        match api.get_opt(&name).await {
            Ok(Some(obj)) => {
                let mut live = self.live_of(addr, &obj, manifest);
                // Being deleted: a plan makes it again, a destroy waits for it.
                if obj.metadata.deletion_timestamp.is_some() {
                    live.attrs
                        .insert(Live::DELETING.to_string(), Value::Bool(true));
                }
                Ok(Some(live))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(api_error(addr, "get", &e)),
        }
    }

    /// Objects of the kinds slipway manages that carry the stack's label but
    /// that the state does not know. Only when the state has Kubernetes
    /// objects: a plan of a new stack needs no cluster. Nothing is in a
    /// cluster that is gone; a cluster that cannot be reached is the reads'
    /// error to report.
    async fn discover(&self, scope: &DiscoverScope<'_>) -> Result<Discovery, ProviderError> {
        let probe = Address::domain_wide(crate::addr::Domain::K8s);
        if scope.managed.is_empty() {
            return Ok(Discovery::default());
        }
        let Ok((client, _)) = self.client(&probe).await else {
            return Ok(Discovery::default());
        };
        let client = &client;
        let selector = format!("{STACK_LABEL}={}", scope.stack);
        let managed: BTreeSet<&Address> = scope.managed.iter().map(|(a, _)| a).collect();
        // Every kind at once.
        let lists =
            futures::future::join_all(DISCOVERABLE.iter().map(|(api_version, kind, catalog)| {
                let (probe, selector) = (&probe, &selector);
                async move {
                    let manifest = json!({"apiVersion": api_version, "kind": kind});
                    // A kind the cluster does not serve (a CRD gone) has
                    // nothing to find; any other failure leaves the kind
                    // unchecked.
                    let (ar, caps) = match self.resource(probe, client, &manifest).await {
                        Ok(found) => found,
                        Err(e) if e.code == "KindUnknown" => return Ok(None),
                        Err(e) => return Err(e),
                    };
                    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
                    let list = api
                        .list(&kube::api::ListParams::default().labels(selector))
                        .await
                        .map_err(|e| api_error(probe, &format!("list {kind}"), &e))?;
                    Ok(Some((*catalog, caps, list)))
                }
            }))
            .await;
        let mut out = Discovery::default();
        for found in lists {
            let Some((catalog, caps, list)) = found? else {
                continue;
            };
            for obj in list {
                let name = obj.metadata.name.clone().unwrap_or_default();
                let id = match (&caps.scope, &obj.metadata.namespace) {
                    (Scope::Namespaced, Some(ns)) => format!("{ns}/{name}"),
                    _ => name,
                };
                // A name an address cannot hold (`system:x`) is reported
                // under one made from it.
                let (addr, claims_address) =
                    match Address::new(crate::addr::Domain::K8s, catalog, &id) {
                        Ok(a) => (a, true),
                        Err(_) => match Address::made_up(crate::addr::Domain::K8s, catalog, &id) {
                            Some(a) => (a, false),
                            None => continue,
                        },
                    };
                // Names are unique per kind: the state tracks it by address.
                if managed.contains(&addr) {
                    continue;
                }
                out.tagged.push(Tagged {
                    addr,
                    id,
                    claims_address,
                });
            }
        }
        Ok(out)
    }

    async fn create(
        &self,
        addr: &Address,
        desired: &Attrs,
        ctx: &OpContext<'_>,
    ) -> Result<Live, ProviderError> {
        let manifest = manifest_of(addr, desired)?;
        // Server-side apply creates, or adopts what an interrupted run made
        // (it carries this stack's label); anything else is someone else's.
        if addr.kind() != "deployment_patch" {
            self.refuse_foreign(addr, manifest).await?;
        }
        self.apply(addr, manifest, ctx).await
    }

    async fn update(
        &self,
        addr: &Address,
        _prior: &Live,
        desired: &Attrs,
        ctx: &OpContext<'_>,
    ) -> Result<Live, ProviderError> {
        self.apply(addr, manifest_of(addr, desired)?, ctx).await
    }

    /// A Deployment waits for its rollout (on Fargate, a node per pod: about
    /// a minute); a namespace's delete waits for what it holds to go.
    fn expected_duration(&self, addr: &Address, deleting: bool) -> std::time::Duration {
        let secs = match (addr.kind(), deleting) {
            ("deployment", false) => 60,
            ("namespace", true) => 30,
            _ => 1,
        };
        std::time::Duration::from_secs(secs)
    }

    /// Follows the EKS cluster: connects through the one the state names
    /// (a renamed cluster's objects are still in the old one), and anew
    /// whenever it is replaced or deleted.
    fn observed(&self, addr: &Address, live: Option<&Live>) {
        if addr.kind_key() != "aws.eks_cluster" {
            return;
        }
        let now = live.map(|l| {
            let name = l
                .attrs
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(&l.id)
                .to_string();
            (name, l.attrs.get("endpoint").cloned())
        });
        if let Ok(mut recorded) = self.recorded_endpoint.lock() {
            use base64::Engine as _;
            *recorded = live.and_then(|l| {
                let endpoint = l.attrs.get("endpoint").and_then(Value::as_str)?;
                let ca = l
                    .attrs
                    .get("certificate_authority")
                    .and_then(Value::as_str)
                    .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())?;
                Some((endpoint.to_string(), ca))
            });
        }
        let Ok(mut last) = self.observed_cluster.lock() else {
            return;
        };
        if *last == now && now.is_some() {
            return;
        }
        if let (Some((name, _)), Ok(mut cluster)) = (&now, self.cluster.lock()) {
            *cluster = Some(name.clone());
        }
        *last = now;
        self.reconnect();
    }

    async fn delete(
        &self,
        addr: &Address,
        prior: &Live,
        ctx: &OpContext<'_>,
    ) -> Result<(), ProviderError> {
        let manifest = manifest_of(addr, &prior.attrs)?;
        // A kind no longer served (its CRD deleted) has no objects left, nor
        // has a cluster that is gone.
        let (api, name) = match self.api(addr, manifest).await {
            Err(e) if e.code == "KindUnknown" || e.code == CLUSTER_GONE => return Ok(()),
            other => other?,
        };
        if addr.kind() == "deployment_patch" {
            // Not slipway's object: give back the fields it set by applying
            // nothing under its field manager.
            let mut empty = json!({"apiVersion": manifest["apiVersion"], "kind": manifest["kind"], "metadata": {"name": manifest.pointer("/metadata/name")}});
            if let Some(ns) = manifest.pointer("/metadata/namespace") {
                empty["metadata"]["namespace"] = ns.clone();
            }
            return match api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&empty),
                )
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(api_error(addr, "server-side apply", &e)),
            };
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            // A namespace already terminating (an earlier run's delete)
            // answers 409: wait for it as for our own.
            Err(e)
                if matches!(&e, kube::Error::Api(s) if s.code == 409)
                    && api
                        .get_opt(&name)
                        .await
                        .ok()
                        .flatten()
                        .is_some_and(|o| o.metadata.deletion_timestamp.is_some()) => {}
            Err(e) => return Err(api_error(addr, "delete", &e)),
        }
        // Namespaces terminate their contents; finalizers run; wait for gone.
        let started = tokio::time::Instant::now();
        let timeout = if addr.kind() == "namespace" {
            self.namespace_timeout()
        } else {
            NAMESPACE_TIMEOUT
        };
        loop {
            match api.get_opt(&name).await {
                Ok(None) => return Ok(()),
                Ok(Some(_)) if started.elapsed() < timeout => {
                    ctx.status(&format!("terminating ({}s)", started.elapsed().as_secs()));
                    tokio::time::sleep(poll_delay(started.elapsed())).await;
                }
                Ok(Some(obj)) => {
                    let (client, _) = self.client(addr).await?;
                    let full = serde_json::to_value(&obj).unwrap_or(Value::Null);
                    let why = if addr.kind() == "namespace" {
                        self.blocking(addr, &client, &full).await
                    } else {
                        obj.metadata
                            .finalizers
                            .clone()
                            .unwrap_or_default()
                            .iter()
                            .map(|f| format!("it waits on finalizer `{f}`"))
                            .collect()
                    };
                    let why = if why.is_empty() {
                        "nothing left in it names a finalizer slipway can see".to_string()
                    } else {
                        why.join("; ")
                    };
                    return Err(err(
                        addr,
                        "DeletionTimeout",
                        format!(
                            "`{name}` is still terminating after {}s: {why}. A finalizer is removed by the controller that set it once its work is done: check that controller runs (`kubectl get pods -A`); if it is gone for good, remove the finalizer by hand (`kubectl patch KIND NAME --type=merge -p '{{\"metadata\":{{\"finalizers\":null}}}}'`) and run slipway again",
                            started.elapsed().as_secs()
                        ),
                        true,
                    ));
                }
                Err(e) => return Err(api_error(addr, "get", &e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_keeps_only_managed_fields() {
        let live = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "uid": "u", "resourceVersion": "7", "labels": {"a": "1", "other": "2"}},
            "spec": {"replicas": 2, "revisionHistoryLimit": 10, "template": {"spec": {"containers": [
                {"name": "sidecar", "image": "s"},
                {"name": "app", "image": "app:2", "imagePullPolicy": "IfNotPresent"}
            ]}}},
            "status": {"readyReplicas": 2}
        });
        let template = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "labels": {"a": "1"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "app", "image": "app:1"}]}}}
        });
        let p = project(&live, &template);
        assert_eq!(
            p,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "x", "labels": {"a": "1"}},
                "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}
            })
        );
    }

    #[test]
    fn items_added_to_an_atomic_list_show_and_other_managers_map_items_do_not() {
        let template = json!({
            "roleRef": {"kind": "Role", "name": "deployer"},
            "subjects": [{"kind": "Group", "name": "deployers"}],
        });
        let live = json!({
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
            "subjects": [{"kind": "Group", "name": "deployers"}, {"kind": "User", "name": "mallory"}],
        });
        // `subjects` is atomic: the added subject is part of what slipway manages.
        assert_eq!(project(&live, &template)["subjects"], live["subjects"]);

        // `env` and `ports` are maps: another manager's items are not slipway's.
        let template = json!({"containers": [{"name": "app", "env": [{"name": "A", "value": "1"}],
                                              "ports": [{"containerPort": 80}]}]});
        let live = json!({"containers": [{"name": "app",
            "env": [{"name": "B", "value": "x"}, {"name": "A", "value": "2"}],
            "ports": [{"containerPort": 9090, "protocol": "TCP"}, {"containerPort": 80, "protocol": "TCP"}]}]});
        assert_eq!(
            project(&live, &template),
            json!({"containers": [{"name": "app", "env": [{"name": "A", "value": "2"}],
                                   "ports": [{"containerPort": 80}]}]})
        );
    }

    #[test]
    fn rollout_follows_kubectl_rollout_status() {
        let d = |generation: i64, status: Value| json!({"metadata": {"generation": generation}, "spec": {"replicas": 2}, "status": status});
        assert!(matches!(
            rollout(&d(2, json!({"observedGeneration": 1}))),
            Rollout::Waiting(_)
        ));
        assert!(matches!(
            rollout(&d(
                1,
                json!({"observedGeneration": 1, "updatedReplicas": 1, "replicas": 2, "availableReplicas": 1})
            )),
            Rollout::Waiting(_)
        ));
        assert_eq!(
            rollout(&d(
                1,
                json!({"observedGeneration": 1, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 2})
            )),
            Rollout::Done
        );
        let failed = d(
            1,
            json!({"observedGeneration": 1, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"x\" has timed out progressing."}]}),
        );
        assert!(matches!(rollout(&failed), Rollout::Failed(m) if m.contains("timed out")));
    }

    #[test]
    fn pem_bundles_become_der() {
        use base64::Engine as _;
        let der = vec![1u8, 2, 3, 4];
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        assert_eq!(pem_certs(pem.as_bytes()), vec![der]);
    }

    #[test]
    fn webhook_configurations_name_the_services_they_call() {
        let hooks = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "webhooks": [
                {"name": "a", "clientConfig": {"service": {"name": "svc", "namespace": "kube-system", "path": "/a"}}},
                {"name": "b", "clientConfig": {"service": {"name": "svc", "namespace": "kube-system", "path": "/b"}}},
                {"name": "c", "clientConfig": {"url": "https://example.com/hook"}},
            ],
        });
        let got = webhook_services(&hooks).unwrap_or_default();
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec![("kube-system".to_string(), "svc".to_string())]
        );
        let service = json!({"apiVersion": "v1", "kind": "Service", "webhooks": []});
        assert!(webhook_services(&service).is_none());
    }

    #[test]
    fn only_a_ready_addressed_endpoint_serves() {
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        let slice = |endpoints: Value| -> EndpointSlice {
            serde_json::from_value(json!({
                "metadata": {"name": "s"},
                "addressType": "IPv4",
                "endpoints": endpoints,
            }))
            .unwrap_or_else(|e| panic!("bad slice: {e}"))
        };
        assert!(!has_ready_endpoint(&slice(json!([]))));
        assert!(!has_ready_endpoint(&slice(
            json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": false}}])
        )));
        assert!(has_ready_endpoint(&slice(
            json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}])
        )));
        // No `ready` condition: ready, per the API's documentation.
        assert!(has_ready_endpoint(&slice(
            json!([{"addresses": ["10.0.0.1"], "conditions": {}}])
        )));
    }
}
