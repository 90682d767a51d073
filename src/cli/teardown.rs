//! Before `destroy --env NAME` deletes an environment's namespace: its
//! Ingresses and `LoadBalancer` Services are deleted while the load
//! balancer controller still runs, and slipway waits until the ELBv2 and
//! EC2 APIs no longer list what the controller made for them — checked, not
//! inferred. If the controller does not finish in time, slipway removes
//! those load balancers, target groups and security groups itself, then the
//! controller's finalizer, so the namespace can go.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use super::common::{Ctx, Platform, hinted};
use crate::provider::OpContext;
use crate::stack::Stack;
use crate::state::State;

/// The finalizer the controller puts on the Ingresses it has taken on.
const INGRESS_FINALIZER: &str = "ingress.k8s.aws/resources";
/// And on `LoadBalancer` Services.
const SERVICE_FINALIZER: &str = "service.k8s.aws/resources";
/// And on the TargetGroupBindings it makes for them.
const BINDING_FINALIZER: &str = "elbv2.k8s.aws/resources";

/// One object the controller made load balancers for.
struct Fronted {
    api_version: &'static str,
    kind: &'static str,
    name: String,
}

/// The controller's stack for an Ingress: its IngressGroup, else itself.
fn ingress_stack(namespace: &str, ing: &Value) -> (String, bool) {
    let name = ing
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    match ing
        .pointer("/metadata/annotations/alb.ingress.kubernetes.io~1group.name")
        .and_then(Value::as_str)
    {
        Some(group) => (group.to_string(), true),
        None => (format!("{namespace}/{name}"), false),
    }
}

/// Each environment to tear down, with its namespace: the stack's, and any
/// the state still has that the stack no longer declares.
pub fn environments(stack: &Stack, state: Option<&State>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = stack
        .environments()
        .iter()
        .map(|e| (e.name().to_string(), e.namespace().to_string()))
        .collect();
    for (addr, r) in state.map(State::resources).into_iter().flatten() {
        if let (Some(env), "namespace") = (&r.env, addr.kind())
            && !out.iter().any(|(e, _)| e == env)
        {
            out.push((env.clone(), addr.name().to_string()));
        }
    }
    out
}

/// Before a whole-stack destroy: every environment as `destroy --env`
/// would, then whatever the controller made for the cluster (Ingresses and
/// Services outside the environments), before anything else is deleted.
pub async fn stack(
    ctx: &Ctx<'_>,
    platform: &Platform,
    cluster: &str,
    environments: &[(String, String)],
    wait: Duration,
) -> Result<()> {
    let Some(aws) = &platform.aws else {
        return Ok(());
    };
    for (env, namespace) in environments {
        environment(ctx, platform, cluster, env, namespace, wait).await?;
    }
    let status = |m: &str| ctx.printer.debug(m);
    let swept = aws
        .sweep_controller_load_balancers(cluster, &OpContext::new(&status))
        .await?;
    if !swept.is_empty() {
        ctx.printer.info(&format!(
            "Removed {} load balancer(s) and {} target group(s) the load balancer controller made for cluster `{cluster}` outside the environments.",
            swept.load_balancers.len(),
            swept.target_groups.len()
        ));
    }
    Ok(())
}

/// Removes the environment's load balancers before its namespace goes.
pub async fn environment(
    ctx: &Ctx<'_>,
    platform: &Platform,
    cluster: &str,
    env: &str,
    namespace: &str,
    wait: Duration,
) -> Result<()> {
    // The simulated cloud has no cluster.
    let (Some(aws), Some(kube)) = (&platform.aws, &platform.kube) else {
        return Ok(());
    };
    let app = match kube.app_cluster(namespace).await {
        Ok(app) => app,
        // No cluster: nothing in it to front.
        Err(e) if e.code == "ClusterNotFound" => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut fronted = Vec::new();
    // IngressGroups may span environments: their load balancer stays while
    // another member lives, so only the environment's own are waited on.
    let mut own = BTreeSet::new();
    for ing in app.list("networking.k8s.io/v1", "Ingress", "").await? {
        let (stack_name, grouped) = ingress_stack(namespace, &ing);
        if !grouped {
            own.insert(stack_name);
        }
        fronted.push(Fronted {
            api_version: "networking.k8s.io/v1",
            kind: "Ingress",
            name: name_of(&ing),
        });
    }
    for svc in app.list("v1", "Service", "").await? {
        if svc.pointer("/spec/type").and_then(Value::as_str) != Some("LoadBalancer") {
            continue;
        }
        let name = name_of(&svc);
        own.insert(format!("{namespace}/{name}"));
        fronted.push(Fronted {
            api_version: "v1",
            kind: "Service",
            name,
        });
    }
    if fronted.is_empty() {
        return Ok(());
    }
    ctx.printer.info(&format!(
        "Deleting {} Ingress(es) and LoadBalancer Service(s) of environment `{env}` while the load balancer controller runs, and waiting until AWS no longer lists their load balancers…",
        fronted.len()
    ));
    for f in &fronted {
        app.delete(f.api_version, f.kind, &f.name, None, None)
            .await?;
    }
    let started = tokio::time::Instant::now();
    loop {
        let mut remaining = Vec::new();
        for f in &fronted {
            if app.get_opt(f.api_version, f.kind, &f.name).await?.is_some() {
                remaining.push(f);
            }
        }
        let made = aws.controller_objects(cluster, &own).await?;
        if remaining.is_empty() && made.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= wait {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // The controller did not finish: do its work, then let go of the objects.
    let status = |m: &str| ctx.printer.debug(m);
    let removed = aws
        .remove_controller_objects(cluster, &own, &OpContext::new(&status))
        .await?;
    if !removed.is_empty() {
        ctx.printer.warn(&format!(
            "the load balancer controller did not remove what it made for environment `{env}` within {}s; slipway removed {} load balancer(s), {} target group(s) and {} security group(s) itself",
            wait.as_secs(),
            removed.load_balancers.len(),
            removed.target_groups.len(),
            removed.security_groups.len()
        ));
    }
    // The controller's TargetGroupBindings hold its finalizer too; their
    // target groups are gone now.
    let bindings = match app
        .list("elbv2.k8s.aws/v1beta1", "TargetGroupBinding", "")
        .await
    {
        Ok(list) => list,
        Err(e) if e.code == "KindUnknown" => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    for b in bindings {
        fronted.push(Fronted {
            api_version: "elbv2.k8s.aws/v1beta1",
            kind: "TargetGroupBinding",
            name: name_of(&b),
        });
    }
    for f in &fronted {
        let Some(mut obj) = app.get_opt(f.api_version, f.kind, &f.name).await? else {
            continue;
        };
        let finalizers: Vec<Value> = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let (ours, others): (Vec<Value>, Vec<Value>) = finalizers.into_iter().partition(|v| {
            matches!(
                v.as_str(),
                Some(INGRESS_FINALIZER | SERVICE_FINALIZER | BINDING_FINALIZER)
            )
        });
        if !others.is_empty() {
            let names: Vec<String> = others
                .iter()
                .filter_map(Value::as_str)
                .map(|s| format!("`{s}`"))
                .collect();
            return Err(hinted(
                format!(
                    "{} `{namespace}/{}` is still being deleted: finalizer(s) {} hold it",
                    f.kind,
                    f.name,
                    names.join(", ")
                ),
                format!(
                    "the controller that owns each finalizer must remove it; if that controller is gone, remove it by hand (`kubectl -n {namespace} patch {} {} --type=json -p '[{{\"op\":\"remove\",\"path\":\"/metadata/finalizers\"}}]'`) and run the destroy again",
                    f.kind.to_lowercase(),
                    f.name
                ),
            ));
        }
        if ours.is_empty() {
            continue;
        }
        // What the finalizer guarded is gone (checked above): release it.
        obj["metadata"]["finalizers"] = Value::Array(Vec::new());
        app.replace(&obj, crate::deploy::FIELD_MANAGER).await?;
        ctx.printer.warn(&format!(
            "removed the controller's finalizer from {} `{namespace}/{}` after removing its load balancer",
            f.kind, f.name
        ));
    }
    Ok(())
}

fn name_of(obj: &Value) -> String {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}
