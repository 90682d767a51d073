//! What a rollout is waiting on, from the objects the API server returns:
//! the pods that are not ready and why (image pulls, crash loops, failing
//! readiness probes, nowhere to run), and whether the load balancer's
//! targets are the new pods, healthy.

use serde_json::Value;

use crate::provider::aws::TargetHealth;

/// Why one pod is not serving, or `None` when it is ready.
pub fn pod_problem(pod: &Value) -> Option<String> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let conditions = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let cond = |t: &str| conditions.iter().find(|c| c["type"] == t);
    if cond("Ready").is_some_and(|c| c["status"] == "True") {
        return None;
    }
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    if let Some(c) = cond("PodScheduled").filter(|c| c["status"] == "False") {
        return Some(format!(
            "pod `{name}` is Pending and not scheduled ({}: {}); on Fargate this means no Fargate profile selects its namespace and labels",
            c["reason"].as_str().unwrap_or("Unschedulable"),
            c["message"].as_str().unwrap_or("")
        ));
    }
    // Init containers first: the others wait for them (`Init:CrashLoopBackOff`).
    let statuses: Vec<(&str, Value)> = ["initContainerStatuses", "containerStatuses"]
        .iter()
        .flat_map(|list| {
            let what = if *list == "initContainerStatuses" {
                "init container"
            } else {
                "container"
            };
            pod.pointer(&format!("/status/{list}"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |s| (what, s))
        })
        .collect();
    for (what, s) in &statuses {
        let cname = s["name"].as_str().unwrap_or("?");
        if *what == "init container"
            && s.pointer("/state/terminated/exitCode") == Some(&Value::from(0))
        {
            continue;
        }
        if let Some(w) = s.pointer("/state/waiting") {
            let reason = w["reason"].as_str().unwrap_or("Waiting");
            if reason == "ContainerCreating" || reason == "PodInitializing" {
                continue;
            }
            let msg = w["message"].as_str().unwrap_or("");
            let restarts = s["restartCount"].as_i64().unwrap_or(0);
            let last = s
                .pointer("/lastState/terminated")
                .map(|t| {
                    format!(
                        "; last exit code {} ({})",
                        t["exitCode"],
                        t["reason"].as_str().unwrap_or("")
                    )
                })
                .unwrap_or_default();
            return Some(format!(
                "pod `{name}` {what} `{cname}`: {reason}{}{}{last}",
                if msg.is_empty() {
                    String::new()
                } else {
                    format!(": {msg}")
                },
                if restarts > 0 {
                    format!(" (restarted {restarts} times)")
                } else {
                    String::new()
                },
            ));
        }
        if *what == "container" && s.pointer("/state/running").is_some() && s["ready"] == false {
            return Some(format!(
                "pod `{name}` container `{cname}` is running but not ready: its readiness probe fails"
            ));
        }
    }
    // Containers ready, pod not: a readiness gate (load balancer target health).
    let gates: Vec<String> = pod
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| g["conditionType"].as_str())
        .filter(|t| !cond(t).is_some_and(|c| c["status"] == "True"))
        .map(str::to_string)
        .collect();
    if cond("ContainersReady").is_some_and(|c| c["status"] == "True") && !gates.is_empty() {
        return Some(format!(
            "pod `{name}` waits for its readiness gate {} (the load balancer's health check)",
            gates.join(", ")
        ));
    }
    Some(format!("pod `{name}` is {phase}, not ready yet"))
}

/// Whether a pod problem will not go away by waiting.
pub fn is_fatal(problem: &str) -> bool {
    [
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImageNeverPull",
    ]
    .iter()
    .any(|r| problem.contains(r))
}

/// The IPs of pods that are running the new release (not terminating).
pub fn pod_ips(pods: &[Value]) -> Vec<String> {
    pods.iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .filter_map(|p| p.pointer("/status/podIP").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// What still keeps the targets from being the new pods, healthy; `None`
/// when every new pod is a healthy target.
pub fn targets_pending(new_ips: &[String], targets: &[TargetHealth]) -> Option<String> {
    let mut missing = Vec::new();
    for ip in new_ips {
        match targets.iter().find(|t| &t.id == ip) {
            Some(t) if t.state == "healthy" => {}
            Some(t) => missing.push(format!(
                "{ip} is {}{}",
                t.state,
                t.description
                    .as_deref()
                    .or(t.reason.as_deref())
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )),
            None => missing.push(format!("{ip} is not registered")),
        }
    }
    if new_ips.is_empty() {
        return Some("no pod of the new release has an IP yet".into());
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_problems_name_the_reason() {
        let pull = json!({"metadata": {"name": "app-1"}, "status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
              "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}});
        let p = pod_problem(&pull).unwrap();
        assert!(p.contains("ImagePullBackOff") && p.contains("app-1"), "{p}");
        assert!(is_fatal(&p));
        let pending = json!({"metadata": {"name": "app-2"}, "status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/0 nodes"}]}});
        let p = pod_problem(&pending).unwrap();
        assert!(p.contains("Fargate profile") && !is_fatal(&p), "{p}");
        let probe = json!({"metadata": {"name": "app-3"}, "status": {"phase": "Running",
            "containerStatuses": [{"name": "app", "ready": false, "state": {"running": {}}}]}});
        assert!(pod_problem(&probe).unwrap().contains("readiness probe"));
        let init = json!({"metadata": {"name": "app-4"}, "status": {"phase": "Pending",
            "initContainerStatuses": [{"name": "migrate", "ready": false, "restartCount": 2,
              "state": {"waiting": {"reason": "CrashLoopBackOff"}},
              "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}],
            "containerStatuses": [{"name": "app", "ready": false, "state": {"waiting": {"reason": "PodInitializing"}}}]}});
        let p = pod_problem(&init).unwrap();
        assert!(
            p.contains("init container `migrate`: CrashLoopBackOff") && p.contains("exit code 1"),
            "{p}"
        );
        let ready = json!({"metadata": {"name": "a"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(pod_problem(&ready), None);
    }

    #[test]
    fn targets_must_be_the_new_pods_and_healthy() {
        let t = |id: &str, state: &str| TargetHealth {
            id: id.into(),
            port: Some(8080),
            state: state.into(),
            reason: None,
            description: None,
        };
        let ips = vec!["10.0.0.1".to_string(), "10.0.0.2".to_string()];
        assert_eq!(
            targets_pending(
                &ips,
                &[
                    t("10.0.0.1", "healthy"),
                    t("10.0.0.2", "healthy"),
                    t("10.0.0.9", "draining")
                ]
            ),
            None
        );
        let p = targets_pending(&ips, &[t("10.0.0.1", "initial")]).unwrap();
        assert!(
            p.contains("10.0.0.1 is initial") && p.contains("10.0.0.2 is not registered"),
            "{p}"
        );
        assert!(targets_pending(&[], &[]).is_some());
    }
}
