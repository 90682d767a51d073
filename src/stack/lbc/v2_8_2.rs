//! AWS Load Balancer Controller v2.8.2: the version-specific parts of its
//! objects, transcribed from the `aws-load-balancer-controller` Helm chart
//! 1.8.2 rendered with default values (its templates `rbac.yaml`,
//! `deployment.yaml` and `webhook.yaml`). What depends on the stack (names,
//! the IRSA role, the cluster, region and VPC, the webhook CA) is filled in
//! by `stack::desired::kube`.

use serde_json::{Value, json};

use super::{Crd, Manifests, Webhook};

const GROUP: &str = "elbv2.k8s.aws";

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

pub(super) const MANIFESTS: Manifests = Manifests {
    chart: "aws-load-balancer-controller-1.8.2",
    cluster_role_rules,
    leader_election_rules,
    crds,
    deployment,
    pod,
    container,
    admission_review_versions: &["v1beta1"],
    mutating_webhooks,
    validating_webhooks,
};

fn cluster_role_rules() -> Value {
    json!([
        rule(
            &[GROUP],
            &["targetgroupbindings"],
            &[
                "create", "delete", "get", "list", "patch", "update", "watch"
            ]
        ),
        rule(&[GROUP], &["ingressclassparams"], &["get", "list", "watch"]),
        rule(&[""], &["events"], &["create", "patch"]),
        rule(&[""], &["pods"], &["get", "list", "watch"]),
        rule(
            &["networking.k8s.io"],
            &["ingressclasses"],
            &["get", "list", "watch"]
        ),
        rule(
            &["", "extensions", "networking.k8s.io"],
            &["services", "ingresses"],
            &["get", "list", "patch", "update", "watch"]
        ),
        rule(
            &[""],
            &["nodes", "namespaces", "endpoints"],
            &["get", "list", "watch"]
        ),
        rule(
            &[GROUP, "", "extensions", "networking.k8s.io"],
            &[
                "targetgroupbindings/status",
                "pods/status",
                "services/status",
                "ingresses/status"
            ],
            &["update", "patch"]
        ),
        rule(
            &["discovery.k8s.io"],
            &["endpointslices"],
            &["get", "list", "watch"]
        ),
    ])
}

fn leader_election_rules() -> Value {
    json!([
        rule(&[""], &["configmaps"], &["create"]),
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["aws-load-balancer-controller-leader"], "verbs": ["get", "patch", "update"]},
        rule(&["coordination.k8s.io"], &["leases"], &["create"]),
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["aws-load-balancer-controller-leader"], "verbs": ["get", "update", "patch"]},
    ])
}

/// Upstream's names, group, versions, scope and subresources. The schema is
/// permissive: upstream's OpenAPI schemas (`crds/crds.yaml` of the chart)
/// could not be obtained from a package registry; see docs/stack.md.
fn crds() -> Vec<Crd> {
    let permissive = json!({"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}});
    vec![
        Crd {
            plural: "ingressclassparams",
            singular: "ingressclassparams",
            kind: "IngressClassParams",
            list_kind: "IngressClassParamsList",
            scope: "Cluster",
            versions: json!([
                {"name": "v1beta1", "served": true, "storage": true, "schema": permissive, "subresources": {}},
            ]),
        },
        Crd {
            plural: "targetgroupbindings",
            singular: "targetgroupbinding",
            kind: "TargetGroupBinding",
            list_kind: "TargetGroupBindingList",
            scope: "Namespaced",
            versions: json!([
                {"name": "v1alpha1", "served": true, "storage": false, "schema": permissive, "subresources": {"status": {}}},
                {"name": "v1beta1", "served": true, "storage": true, "schema": permissive, "subresources": {"status": {}}},
            ]),
        },
    ]
}

fn deployment() -> Value {
    json!({"replicas": 2, "revisionHistoryLimit": 10})
}

fn pod() -> Value {
    json!({
        "securityContext": {"fsGroup": 65534},
        "terminationGracePeriodSeconds": 10,
        "priorityClassName": "system-cluster-critical",
    })
}

fn container() -> Value {
    json!({
        "imagePullPolicy": "IfNotPresent",
        "ports": [
            {"name": "webhook-server", "containerPort": 9443, "protocol": "TCP"},
            {"name": "metrics-server", "containerPort": 8080, "protocol": "TCP"},
        ],
        "volumeMounts": [{"mountPath": "/tmp/k8s-webhook-server/serving-certs", "name": "cert", "readOnly": true}],
        "securityContext": {"readOnlyRootFilesystem": true, "runAsNonRoot": true, "allowPrivilegeEscalation": false},
        "livenessProbe": {"failureThreshold": 2, "httpGet": {"path": "/healthz", "port": 61779, "scheme": "HTTP"}, "initialDelaySeconds": 30, "timeoutSeconds": 10},
        "readinessProbe": {"failureThreshold": 2, "httpGet": {"path": "/readyz", "port": 61779, "scheme": "HTTP"}, "successThreshold": 1, "initialDelaySeconds": 10, "timeoutSeconds": 10},
    })
}

/// Selects every object but the controller's own pods and services.
fn not_self() -> Value {
    json!({"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "NotIn", "values": ["aws-load-balancer-controller"]}]})
}

fn mutating_webhooks() -> Vec<Webhook> {
    vec![
        Webhook {
            name: "mpod.elbv2.k8s.aws",
            path: "/mutate-v1-pod",
            rest: json!({
                "namespaceSelector": {"matchExpressions": [{"key": "elbv2.k8s.aws/pod-readiness-gate-inject", "operator": "In", "values": ["enabled"]}]},
                "objectSelector": not_self(),
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            }),
        },
        Webhook {
            name: "mservice.elbv2.k8s.aws",
            path: "/mutate-v1-service",
            rest: json!({
                "objectSelector": not_self(),
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["services"]}],
            }),
        },
        Webhook {
            name: "mtargetgroupbinding.elbv2.k8s.aws",
            path: "/mutate-elbv2-k8s-aws-v1beta1-targetgroupbinding",
            rest: json!({
                "rules": [{"apiGroups": [GROUP], "apiVersions": ["v1beta1"], "operations": ["CREATE", "UPDATE"], "resources": ["targetgroupbindings"]}],
            }),
        },
    ]
}

fn validating_webhooks() -> Vec<Webhook> {
    vec![
        Webhook {
            name: "vingressclassparams.elbv2.k8s.aws",
            path: "/validate-elbv2-k8s-aws-v1beta1-ingressclassparams",
            rest: json!({
                "objectSelector": not_self(),
                "rules": [{"apiGroups": [GROUP], "apiVersions": ["v1beta1"], "operations": ["CREATE", "UPDATE"], "resources": ["ingressclassparams"]}],
            }),
        },
        Webhook {
            name: "vtargetgroupbinding.elbv2.k8s.aws",
            path: "/validate-elbv2-k8s-aws-v1beta1-targetgroupbinding",
            rest: json!({
                "rules": [{"apiGroups": [GROUP], "apiVersions": ["v1beta1"], "operations": ["CREATE", "UPDATE"], "resources": ["targetgroupbindings"]}],
            }),
        },
        Webhook {
            name: "vingress.elbv2.k8s.aws",
            path: "/validate-networking-v1-ingress",
            rest: json!({
                "matchPolicy": "Equivalent",
                "rules": [{"apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["ingresses"]}],
            }),
        },
    ]
}
