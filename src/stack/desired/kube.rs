//! Kubernetes objects: namespaces, the CoreDNS change, deploy RBAC and the
//! AWS Load Balancer Controller. Each object is one `manifest` attribute.
//!
//! The controller's objects follow the upstream Helm chart of the pinned
//! release with default values (webhook certificate made by slipway
//! instead of Helm); their version-specific parts are in `stack::lbc`.

use serde_json::json;

use super::jenkins::{DEPLOYERS_GROUP, PRODUCTION_DEPLOYERS_GROUP, has_production};
use super::{Builder, LBC_NAME, Shared, id, k8s, lit};
use crate::addr::{Address, AddressError, Domain};
use crate::resource::{Expr, Resource};
use crate::stack::lbc;

const DEPLOYER: &str = "slipway-deployer";
/// The RoleBinding that lets the other Jenkins pool read an environment.
const READER: &str = "slipway-reader";
const KUBE_SYSTEM: &str = "kube-system";
const WEBHOOK_SERVICE: &str = "aws-load-balancer-webhook-service";
const WEBHOOK_SECRET: &str = "aws-load-balancer-tls";
const WEBHOOK_CONFIG: &str = "aws-load-balancer-webhook";
const LBC_GROUP: &str = "elbv2.k8s.aws";

pub(super) fn build(b: &mut Builder<'_>, shared: &Shared) -> Result<(), AddressError> {
    let mut k = Kube { b, shared };
    let coredns = k.coredns()?;
    let controller = k.load_balancer_controller(&coredns)?;
    // Environments come after the controller, so on destroy they go first,
    // while it is still there to remove their load balancers and the
    // finalizers it put on their Ingresses and TargetGroupBindings.
    k.environments(&controller)?;
    Ok(())
}

struct Kube<'a, 'b> {
    b: &'a mut Builder<'b>,
    shared: &'a Shared,
}

/// Labels on the controller's objects; its pods are selected by the first two.
fn lbc_labels() -> Vec<(&'static str, String)> {
    vec![
        ("app.kubernetes.io/name", LBC_NAME.to_string()),
        ("app.kubernetes.io/instance", LBC_NAME.to_string()),
    ]
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> serde_json::Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

/// An object's fields as map entries of literal values.
fn entries(object: serde_json::Value) -> Vec<(String, Expr)> {
    match object {
        serde_json::Value::Object(m) => m.into_iter().map(|(k, v)| (k, lit(v))).collect(),
        _ => Vec::new(),
    }
}

impl Kube<'_, '_> {
    /// A full object: `apiVersion`, `kind`, `metadata` with slipway's labels
    /// (plus `labels`), and `body` next to `metadata`.
    fn object(
        &self,
        (api_version, kind): (&str, &str),
        name: &str,
        namespace: Option<&str>,
        labels: &[(&str, String)],
        annotations: Option<Expr>,
        body: Vec<(&str, Expr)>,
    ) -> Expr {
        let mut all_labels = vec![
            ("app.kubernetes.io/managed-by", Expr::str("slipway")),
            ("slipway.dev/stack", Expr::str(self.b.s.name.as_str())),
        ];
        all_labels.extend(labels.iter().map(|(k, v)| (*k, Expr::str(v.as_str()))));
        let mut metadata = vec![("name", Expr::str(name))];
        if let Some(ns) = namespace {
            metadata.push(("namespace", Expr::str(ns)));
        }
        metadata.push(("labels", Expr::map(all_labels)));
        if let Some(a) = annotations {
            metadata.push(("annotations", a));
        }
        let mut entries = vec![
            ("apiVersion", Expr::str(api_version)),
            ("kind", Expr::str(kind)),
            ("metadata", Expr::map(metadata)),
        ];
        entries.extend(body);
        Expr::map(entries)
    }

    /// An object that needs the cluster and the kube-system Fargate profile
    /// (every object does: the API is there, and pods can run).
    fn resource(&self, addr: &Address, manifest: Expr, after: &[&Address]) -> Resource {
        let mut r = Resource::new(addr.clone())
            .attr("manifest", manifest)
            .within(&self.shared.cluster)
            .after(&self.shared.kube_system_profile);
        for a in after {
            r = r.after(a);
        }
        r
    }

    fn push(&mut self, addr: &Address, manifest: Expr, after: &[&Address]) {
        let r = self.resource(addr, manifest, after);
        self.b.push(r);
    }

    fn push_env(&mut self, addr: &Address, manifest: Expr, after: &[&Address], env: &str) {
        let r = self.resource(addr, manifest, after).env(env);
        self.b.push(r);
    }

    fn environments(&mut self, after: &[Address]) -> Result<(), AddressError> {
        let after: Vec<&Address> = after.iter().collect();
        let envs = self.b.s.environments.clone();
        for env in &envs {
            let ns = env.namespace.as_str();
            let ns_addr = k8s("namespace", ns)?;
            let manifest = self.object(
                ("v1", "Namespace"),
                ns,
                None,
                &[
                    ("slipway.dev/environment", env.name.clone()),
                    // ALB target health gates rollouts (target-type ip).
                    (
                        "elbv2.k8s.aws/pod-readiness-gate-inject",
                        "enabled".to_string(),
                    ),
                ],
                None,
                vec![],
            );
            // Its pods run on its Fargate profile: on teardown the
            // namespace goes first, its pods terminating where they run,
            // and the profile once nothing is left to schedule.
            let profile = Address::new(Domain::Aws, "eks_fargate_profile", &env.name)?;
            let mut ns_after = after.clone();
            ns_after.push(&profile);
            self.push_env(&ns_addr, manifest, &ns_after, &env.name);

            let role = k8s("role", &format!("{ns}/{DEPLOYER}"))?;
            let rules = json!([
                rule(
                    &["apps"],
                    &["deployments", "replicasets", "statefulsets"],
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete"
                    ]
                ),
                rule(
                    &["apps"],
                    &["deployments/status", "deployments/scale"],
                    &["get", "patch", "update"]
                ),
                rule(
                    &[""],
                    &[
                        "services",
                        "configmaps",
                        "secrets",
                        "serviceaccounts",
                        "persistentvolumeclaims"
                    ],
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete"
                    ]
                ),
                rule(
                    &[""],
                    &["pods", "pods/log", "events", "endpoints"],
                    &["get", "list", "watch"]
                ),
                rule(
                    &["networking.k8s.io"],
                    &["ingresses"],
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete"
                    ]
                ),
                // The deploy stage's lock and the controller's target
                // group bindings (read to find the ALB's targets).
                rule(
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["get", "list", "watch", "create", "update", "delete"]
                ),
                rule(
                    &["elbv2.k8s.aws"],
                    &["targetgroupbindings"],
                    &["get", "list", "watch"]
                ),
                rule(
                    &["autoscaling"],
                    &["horizontalpodautoscalers"],
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete"
                    ]
                ),
                rule(
                    &["policy"],
                    &["poddisruptionbudgets"],
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete"
                    ]
                ),
                rule(
                    &["batch"],
                    &["jobs", "cronjobs"],
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete"
                    ]
                ),
            ]);
            let env_label = [("slipway.dev/environment", env.name.clone())];
            let manifest = self.object(
                ("rbac.authorization.k8s.io/v1", "Role"),
                DEPLOYER,
                Some(ns),
                &env_label,
                None,
                vec![("rules", lit(rules))],
            );
            self.push_env(&role, manifest, &[&ns_addr], &env.name);

            // Each pool deploys to its own environments and reads the
            // others' (releases, Deployments: what promotion checks).
            let production = has_production(self.b.s);
            let (deployers, readers) = match (env.protected, production) {
                (true, _) => (PRODUCTION_DEPLOYERS_GROUP, Some(DEPLOYERS_GROUP)),
                (false, true) => (DEPLOYERS_GROUP, Some(PRODUCTION_DEPLOYERS_GROUP)),
                (false, false) => (DEPLOYERS_GROUP, None),
            };
            let group = |name: &str| json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": name}]);
            if let Some(readers) = readers {
                let binding = k8s("role_binding", &format!("{ns}/{READER}"))?;
                let manifest = self.object(
                    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
                    READER,
                    Some(ns),
                    &env_label,
                    None,
                    vec![
                        (
                            "roleRef",
                            lit(json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"})),
                        ),
                        ("subjects", lit(group(readers))),
                    ],
                );
                self.push_env(&binding, manifest, &[&ns_addr], &env.name);
            }
            let binding = k8s("role_binding", &format!("{ns}/{DEPLOYER}"))?;
            let manifest = self.object(
                ("rbac.authorization.k8s.io/v1", "RoleBinding"),
                DEPLOYER,
                Some(ns),
                &env_label,
                None,
                vec![
                    (
                        "roleRef",
                        lit(json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": DEPLOYER})),
                    ),
                    ("subjects", lit(group(deployers))),
                ],
            );
            self.push_env(&binding, manifest, &[&ns_addr, &role], &env.name);
        }
        Ok(())
    }

    /// EKS marks CoreDNS for EC2 nodes; this cluster has none, so its pod
    /// template is annotated for Fargate (as eksctl does), which also rolls it.
    fn coredns(&mut self) -> Result<Address, AddressError> {
        let addr = k8s("deployment_patch", "kube-system/coredns")?;
        let manifest = Expr::Lit(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": KUBE_SYSTEM},
            "spec": {"template": {"metadata": {"annotations": {
                "eks.amazonaws.com/compute-type": "fargate"
            }}}},
        }));
        self.push(&addr, manifest, &[]);
        Ok(addr)
    }

    /// The controller; returns what the environments wait for (its
    /// Deployment and IngressClass).
    fn load_balancer_controller(
        &mut self,
        coredns: &Address,
    ) -> Result<Vec<Address>, AddressError> {
        let s = self.b.s;
        let release = s.ingress;
        let manifests = release.manifests;
        let mut labels = lbc_labels();
        labels.push(("app.kubernetes.io/version", format!("v{}", release.version)));
        let ns = Some(KUBE_SYSTEM);

        let sa = k8s("service_account", &format!("{KUBE_SYSTEM}/{LBC_NAME}"))?;
        let m = self.object(
            ("v1", "ServiceAccount"),
            LBC_NAME,
            ns,
            &labels,
            Some(Expr::map([(
                "eks.amazonaws.com/role-arn",
                Expr::reference(&self.shared.lb_controller_role, "arn"),
            )])),
            vec![],
        );
        self.push(&sa, m, &[]);

        let cluster_role = k8s("cluster_role", &format!("{LBC_NAME}-role"))?;
        let m = self.object(
            ("rbac.authorization.k8s.io/v1", "ClusterRole"),
            &format!("{LBC_NAME}-role"),
            None,
            &labels,
            None,
            vec![("rules", lit((manifests.cluster_role_rules)()))],
        );
        self.push(&cluster_role, m, &[]);

        let subjects =
            lit(json!([{"kind": "ServiceAccount", "name": LBC_NAME, "namespace": KUBE_SYSTEM}]));
        let crb = k8s("cluster_role_binding", &format!("{LBC_NAME}-rolebinding"))?;
        let m = self.object(
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
            &format!("{LBC_NAME}-rolebinding"),
            None,
            &labels,
            None,
            vec![
                (
                    "roleRef",
                    lit(json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{LBC_NAME}-role")})),
                ),
                ("subjects", subjects.clone()),
            ],
        );
        self.push(&crb, m, &[&cluster_role, &sa]);

        let le_name = format!("{LBC_NAME}-leader-election-role");
        let le_role = k8s("role", &format!("{KUBE_SYSTEM}/{le_name}"))?;
        let m = self.object(
            ("rbac.authorization.k8s.io/v1", "Role"),
            &le_name,
            ns,
            &labels,
            None,
            vec![("rules", lit((manifests.leader_election_rules)()))],
        );
        self.push(&le_role, m, &[]);

        let le_binding_name = format!("{LBC_NAME}-leader-election-rolebinding");
        let le_binding = k8s("role_binding", &format!("{KUBE_SYSTEM}/{le_binding_name}"))?;
        let m = self.object(
            ("rbac.authorization.k8s.io/v1", "RoleBinding"),
            &le_binding_name,
            ns,
            &labels,
            None,
            vec![
                (
                    "roleRef",
                    lit(json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": le_name})),
                ),
                ("subjects", subjects),
            ],
        );
        self.push(&le_binding, m, &[&le_role, &sa]);

        let crds = self.crds(&labels, (manifests.crds)())?;

        let cert = Address::new(Domain::Tls, "certificate", "lb_webhook")?;
        let dns = format!("{WEBHOOK_SERVICE}.{KUBE_SYSTEM}.svc");
        self.b.push(
            Resource::new(cert.clone())
                .attr("common_name", dns.as_str())
                .attr(
                    "dns_names",
                    lit(json!([dns, format!("{dns}.cluster.local")])),
                )
                .attr("validity_days", 3650_u64)
                // Renewed (an update) when a read finds it due.
                .attr("renewal_due", false),
        );

        let secret = k8s("secret", &format!("{KUBE_SYSTEM}/{WEBHOOK_SECRET}"))?;
        let m = self.object(
            ("v1", "Secret"),
            WEBHOOK_SECRET,
            ns,
            &labels,
            None,
            vec![
                ("type", Expr::str("kubernetes.io/tls")),
                (
                    "data",
                    Expr::map([
                        ("ca.crt", Expr::reference(&cert, "ca_pem_base64")),
                        ("tls.crt", Expr::reference(&cert, "cert_pem_base64")),
                        ("tls.key", Expr::reference(&cert, "key_pem_base64")),
                    ]),
                ),
            ],
        );
        self.push(&secret, m, &[]);

        let selector = json!({
            "app.kubernetes.io/name": LBC_NAME,
            "app.kubernetes.io/instance": LBC_NAME,
        });
        let service = k8s("service", &format!("{KUBE_SYSTEM}/{WEBHOOK_SERVICE}"))?;
        let m = self.object(
            ("v1", "Service"),
            WEBHOOK_SERVICE,
            ns,
            &[
                ("app.kubernetes.io/name", LBC_NAME.to_string()),
                ("app.kubernetes.io/instance", LBC_NAME.to_string()),
                ("app.kubernetes.io/component", "webhook".to_string()),
                ("prometheus.io/service-monitor", "false".to_string()),
            ],
            None,
            vec![(
                "spec",
                lit(json!({
                    "ports": [{"port": 443, "name": "webhook-server", "targetPort": "webhook-server"}],
                    "selector": selector,
                })),
            )],
        );
        self.push(&service, m, &[]);

        let deployment = k8s("deployment", &format!("{KUBE_SYSTEM}/{LBC_NAME}"))?;
        let mut container = vec![
            ("name".to_string(), Expr::str(LBC_NAME)),
            ("image".to_string(), Expr::str(release.image)),
            (
                "args".to_string(),
                Expr::List(vec![
                    Expr::str(format!("--cluster-name={}", s.cluster.name)),
                    Expr::str("--ingress-class=alb"),
                    Expr::str(format!("--aws-region={}", s.region)),
                    Expr::Concat(vec![Expr::str("--aws-vpc-id="), id(&self.shared.vpc)]),
                ]),
            ),
        ];
        container.extend(entries((manifests.container)()));
        let mut pod = vec![
            ("serviceAccountName".to_string(), Expr::str(LBC_NAME)),
            (
                "volumes".to_string(),
                lit(
                    json!([{"name": "cert", "secret": {"defaultMode": 420, "secretName": WEBHOOK_SECRET}}]),
                ),
            ),
            (
                "containers".to_string(),
                Expr::List(vec![Expr::map(container)]),
            ),
        ];
        pod.extend(entries((manifests.pod)()));
        let mut spec = entries((manifests.deployment)());
        spec.extend([
            (
                "selector".to_string(),
                lit(json!({"matchLabels": selector})),
            ),
            (
                "template".to_string(),
                Expr::map([
                    ("metadata", lit(json!({"labels": selector}))),
                    ("spec", Expr::map(pod)),
                ]),
            ),
        ]);
        let m = self.object(
            ("apps/v1", "Deployment"),
            LBC_NAME,
            ns,
            &labels,
            None,
            vec![("spec", Expr::map(spec))],
        );
        let mut after: Vec<&Address> = vec![&sa, &crb, &le_binding, &secret, &service, coredns];
        after.extend(self.shared.lb_controller_permissions.iter());
        after.extend(crds.iter());
        self.push(&deployment, m, &after);

        // Webhooks are registered once the controller serves them: with
        // failurePolicy Fail, an earlier registration would block every
        // Service creation in the cluster.
        // The bundle: the CA, and after a CA renewal the previous one too,
        // so the certificate the pods still serve stays trusted.
        let ca = Expr::reference(&cert, "ca_bundle_base64");
        let client = |path: &str| {
            Expr::map([
                ("caBundle", ca.clone()),
                (
                    "service",
                    lit(json!({"name": WEBHOOK_SERVICE, "namespace": KUBE_SYSTEM, "path": path})),
                ),
            ])
        };
        let review_versions = lit(json!(manifests.admission_review_versions));
        let hook = |w: lbc::Webhook| {
            let mut fields = vec![
                ("clientConfig".to_string(), client(w.path)),
                ("name".to_string(), Expr::str(w.name)),
                (
                    "admissionReviewVersions".to_string(),
                    review_versions.clone(),
                ),
                ("sideEffects".to_string(), Expr::str("None")),
                ("failurePolicy".to_string(), Expr::str("Fail")),
            ];
            fields.extend(entries(w.rest));
            Expr::map(fields)
        };
        let mutating = k8s("mutating_webhook_configuration", WEBHOOK_CONFIG)?;
        let m = self.object(
            (
                "admissionregistration.k8s.io/v1",
                "MutatingWebhookConfiguration",
            ),
            WEBHOOK_CONFIG,
            None,
            &labels,
            None,
            vec![(
                "webhooks",
                Expr::List(
                    (manifests.mutating_webhooks)()
                        .into_iter()
                        .map(hook)
                        .collect(),
                ),
            )],
        );
        self.push(&mutating, m, &[&deployment, &service]);

        let validating = k8s("validating_webhook_configuration", WEBHOOK_CONFIG)?;
        let m = self.object(
            (
                "admissionregistration.k8s.io/v1",
                "ValidatingWebhookConfiguration",
            ),
            WEBHOOK_CONFIG,
            None,
            &labels,
            None,
            vec![(
                "webhooks",
                Expr::List(
                    (manifests.validating_webhooks)()
                        .into_iter()
                        .map(hook)
                        .collect(),
                ),
            )],
        );
        self.push(&validating, m, &[&deployment, &service]);

        let params = k8s("ingress_class_params", "alb")?;
        let m = self.object(
            (&format!("{LBC_GROUP}/v1beta1"), "IngressClassParams"),
            "alb",
            None,
            &labels,
            None,
            vec![("spec", lit(json!({})))],
        );
        let mut after: Vec<&Address> = vec![&validating];
        after.extend(crds.iter());
        self.push(&params, m, &after);

        let class = k8s("ingress_class", "alb")?;
        let m = self.object(
            ("networking.k8s.io/v1", "IngressClass"),
            "alb",
            None,
            &labels,
            None,
            vec![(
                "spec",
                lit(json!({
                    "controller": "ingress.k8s.aws/alb",
                    "parameters": {"apiGroup": LBC_GROUP, "kind": "IngressClassParams", "name": "alb"},
                })),
            )],
        );
        self.push(&class, m, &[&params]);
        Ok(vec![deployment, class])
    }

    /// The controller's CRDs, as the release defines them.
    fn crds(
        &mut self,
        labels: &[(&str, String)],
        defs: Vec<lbc::Crd>,
    ) -> Result<Vec<Address>, AddressError> {
        let mut out = Vec::new();
        for crd in defs {
            let name = format!("{}.{LBC_GROUP}", crd.plural);
            let addr = k8s("crd", &name)?;
            let m = self.object(
                ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
                &name,
                None,
                labels,
                None,
                vec![(
                    "spec",
                    lit(json!({
                        "group": LBC_GROUP,
                        "names": {"kind": crd.kind, "listKind": crd.list_kind, "plural": crd.plural, "singular": crd.singular},
                        "scope": crd.scope,
                        "versions": crd.versions,
                    })),
                )],
            );
            self.push(&addr, m, &[]);
            out.push(addr);
        }
        Ok(out)
    }
}
