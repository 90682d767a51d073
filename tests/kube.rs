//! The Kubernetes provider's ordering rules against the Kubernetes test
//! server: what a real API server needs before an object can be applied.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::kubetest::KubeTest;
use serde_json::{Value, json};
use slipway::addr::{Address, Domain};
use slipway::provider::kube::{Connection, KubeProvider};
use slipway::provider::{OpContext, Provider};
use slipway::resource::Attrs;

fn addr(kind: &str, id: &str) -> Address {
    Address::new(Domain::K8s, kind, id).unwrap()
}

fn attrs(manifest: Value) -> Attrs {
    [("manifest".to_string(), manifest)].into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_registered_only_once_its_service_has_a_ready_endpoint() {
    let kube = KubeTest::start_with(&["--deployment-delay", "0.2"]);
    let provider = KubeProvider::new(Connection::Kubeconfig(kube.kubeconfig.clone()));
    let quiet = OpContext::silent();
    provider
        .create(
            &addr("service", "default/hooks"),
            &attrs(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "hooks", "namespace": "default"},
                "spec": {"selector": {"app": "hooks"}, "ports": [{"port": 443, "targetPort": 9443}]},
            })),
            &quiet,
        )
        .await
        .unwrap();

    let seen = Mutex::new(Vec::<String>::new());
    let record = |m: &str| seen.lock().unwrap().push(m.to_string());
    let ctx = OpContext::new(&record);
    let hook_addr = addr("validating_webhook_configuration", "hooks");
    let hooks = attrs(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "hooks"},
            "webhooks": [{
                "name": "vhooks.example.com",
                "clientConfig": {"service": {"name": "hooks", "namespace": "default", "path": "/validate"}},
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}],
            }],
    }));
    let register = provider.create(&hook_addr, &hooks, &ctx);
    // Nothing serves the webhook yet: it must not be registered. Then the
    // pods behind the service come up.
    let serve = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            kube.get(&["validatingwebhookconfiguration", "hooks"])
                .is_none(),
            "registered before anything serves it"
        );
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "hooks", "namespace": "default"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "hooks"}},
                "template": {
                    "metadata": {"labels": {"app": "hooks"}},
                    "spec": {"containers": [{"name": "hooks", "image": "example/hooks:1", "ports": [{"containerPort": 9443}]}]},
                },
            },
        });
        provider
            .create(
                &addr("deployment", "default/hooks"),
                &attrs(deployment),
                &quiet,
            )
            .await
            .unwrap();
    };
    let (registered, ()) = tokio::join!(register, serve);
    registered.unwrap();
    assert!(
        kube.get(&["validatingwebhookconfiguration", "hooks"])
            .is_some()
    );
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|m| m.contains("ready endpoint of the webhook service `default/hooks`")),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_resource_waits_until_its_crd_is_established() {
    let kube = KubeTest::start_with(&["--crd-delay", "4"]);
    let provider = KubeProvider::new(Connection::Kubeconfig(kube.kubeconfig.clone()));
    let quiet = OpContext::silent();
    let started = Instant::now();
    provider
        .create(
            &addr("crd", "widgets.example.com"),
            &attrs(json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": "widgets.example.com"},
                "spec": {
                    "group": "example.com",
                    "names": {"kind": "Widget", "listKind": "WidgetList", "plural": "widgets", "singular": "widget"},
                    "scope": "Cluster",
                    "versions": [{"name": "v1", "served": true, "storage": true,
                                  "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
                },
            })),
            &quiet,
        )
        .await
        .unwrap();
    // The server does not serve the kind yet.
    assert!(
        !kube
            .kubectl(&["get", "widgets.example.com"])
            .status
            .success()
    );

    let seen = Mutex::new(Vec::<String>::new());
    let record = |m: &str| seen.lock().unwrap().push(m.to_string());
    let widget = provider
        .create(
            &addr("widget", "w1"),
            &attrs(json!({
                "apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "w1"},
                "spec": {"size": 3},
            })),
            &OpContext::new(&record),
        )
        .await;
    widget.unwrap();
    let got = kube.get(&["widgets.example.com", "w1"]).unwrap();
    assert_eq!(got["spec"]["size"], 3);
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|m| m.contains("serve this kind")),
        "{seen:?}"
    );
    println!(
        "custom resource applied {:.1}s after its CRD",
        started.elapsed().as_secs_f64()
    );

    // Its CRD deleted behind slipway's back: the object is gone with it.
    let w1 = addr("widget", "w1");
    let live = provider
        .read(&w1, &widget_live(&got))
        .await
        .unwrap()
        .unwrap();
    assert!(
        kube.kubectl(&["delete", "crd", "widgets.example.com"])
            .status
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match provider.read(&w1, &live).await {
            Ok(None) => break,
            Ok(Some(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("the widget should be gone with its CRD: {other:?}"),
        }
    }
    provider.delete(&w1, &live, &quiet).await.unwrap();
}

fn widget_live(obj: &Value) -> slipway::resource::Live {
    slipway::resource::Live {
        id: "w1".into(),
        attrs: attrs(json!({
            "apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_still_terminating_is_created_again_once_it_is_gone() {
    let kube = KubeTest::start_with(&["--namespace-delay", "0.1"]);
    let provider = KubeProvider::new(Connection::Kubeconfig(kube.kubeconfig.clone()));
    let quiet = OpContext::silent();
    let ns = addr("namespace", "app");
    let manifest = attrs(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "app", "labels": {"team": "a"}},
    }));
    provider.create(&ns, &manifest, &quiet).await.unwrap();
    // Someone's finalizer holds the namespace while it is deleted.
    let out = kube.kubectl(&[
        "patch",
        "namespace",
        "app",
        "--type=merge",
        "-p",
        r#"{"metadata": {"finalizers": ["example.com/hold"]}}"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        kube.kubectl(&["delete", "namespace", "app", "--wait=false"])
            .status
            .success()
    );

    let seen = Mutex::new(Vec::<String>::new());
    let record = |m: &str| seen.lock().unwrap().push(m.to_string());
    let ctx = OpContext::new(&record);
    let create = provider.create(&ns, &manifest, &ctx);
    let release = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let out = kube.kubectl(&[
            "patch",
            "namespace",
            "app",
            "--type=json",
            "-p",
            r#"[{"op": "remove", "path": "/metadata/finalizers"}]"#,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (created, ()) = tokio::join!(create, release);
    created.unwrap();
    let got = kube.get(&["namespace", "app"]).unwrap();
    assert!(got["metadata"]["deletionTimestamp"].is_null(), "{got}");
    assert_eq!(got["metadata"]["labels"]["team"], "a");
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("finish terminating")),
        "{:?}",
        seen.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_answers_are_tried_again_a_few_times_then_reported() {
    let kube = KubeTest::start_with(&[]);
    let provider = KubeProvider::new(Connection::Kubeconfig(kube.kubeconfig.clone()));
    let ns = addr("namespace", "default");
    let prior = slipway::resource::Live {
        id: "default".into(),
        attrs: attrs(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "default"}})),
    };
    // A server that is briefly busy: each request is tried again, and the
    // read (and the connection's first call before it) goes through.
    kube.configure(json!({"busy_requests": 3}));
    let found = provider.read(&ns, &prior).await.unwrap();
    assert!(found.is_some());

    // Busy for good, and asking for 60 s more each time: not waited for.
    // Tried 1 + 4 times with short pauses, then the 503 is the error, not
    // a wait of many minutes (kube's own retry tries 15 times, pausing up
    // to 1000 s).
    let path = "/api/v1/namespaces/default";
    for (retry_after, tries) in [(0, 5), (60, 1)] {
        kube.configure(json!({"busy_requests": 1000, "busy_retry_after": retry_after}));
        kube.reset_requests();
        let e = provider.read(&ns, &prior).await.unwrap_err();
        assert!(
            e.message.contains("HTTP 503") && e.retryable,
            "{}",
            e.message
        );
        let log = kube.request_log();
        let tried = log["log"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["path"] == path)
            .inspect(|r| assert_eq!(r["status"], 503))
            .count();
        assert_eq!(tried, tries, "Retry-After {retry_after}: {log}");
    }
    kube.configure(json!({"busy_requests": 0, "busy_retry_after": 0}));
    assert!(provider.read(&ns, &prior).await.unwrap().is_some());
}
