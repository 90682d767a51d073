"""Background controllers: CRD establishment, namespaces, garbage collection, Deployments (with the scheduler
and kubelet of their Pods), Endpoints and EndpointSlices, the AWS Load Balancer Controller (Ingresses,
TargetGroupBindings, the pod readiness-gate webhook)."""

from __future__ import annotations

import copy
import datetime
import fnmatch
import hashlib
import json
import sys
import threading
import time

from .store import ApiError, Store, _rand, now_ts

ALB_FINALIZER = "ingress.k8s.aws/resources"
TGB_GROUP = "elbv2.k8s.aws"
TGB_FINALIZER = "elbv2.k8s.aws/resources"
GATE_PREFIX = "target-health.elbv2.k8s.aws/"
INJECT_LABEL = "elbv2.k8s.aws/pod-readiness-gate-inject"
KCM = "kube-controller-manager"
EP_MANAGER = "endpoint-controller"
EPS_MANAGER = "endpointslice-controller"
EPS_CONTROLLER = "endpointslice-controller.k8s.io"
LABEL_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
LABEL_HEADLESS = "service.kubernetes.io/headless"
TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"


def log(msg: str) -> None:
    print(f"kubetest: {msg}", file=sys.stderr, flush=True)


class Controllers:
    def __init__(self, store: Store, config: dict, aws: dict):
        self.s = store
        self.config = config
        self.aws = aws  # endpoint, region, cluster
        self.stop = threading.Event()
        self.ing_seen: dict[str, float] = {}
        self.ing_retry: dict[str, float] = {}
        self.ns_done: set = set()
        self.ns_terminating: dict[str, float] = {}
        self.ep_services: dict[tuple, str] = {}  # (namespace, name) -> uid of the Services seen last pass
        self.completed: set = set()  # (uid, generation) of Deployment rollouts that completed
        self.progress: dict[tuple, tuple] = {}  # (uid, generation) -> (progress marks, when they last grew)
        self.pod_sim: dict[str, dict] = {}  # Pod uid -> the kubelet's record (start, containers, events)
        self._pruned = 0.0
        self.stack_fp: dict[str, str] = {}  # ALB stack -> fingerprint of what it was last reconciled from
        self.unbound_logged: set = set()
        self.tgb_memo: dict[str, dict] = {}  # TargetGroupBinding uid -> targets last synced, when
        self._elb = None
        self._ec2 = None
        store.admission.append(self._pod_webhook)

    def start(self) -> None:
        threading.Thread(target=self.run, name="controllers", daemon=True).start()

    def run(self) -> None:
        while not self.stop.is_set():
            for step in (self.crds, self.namespaces, self.gc, self.deployments, self.endpoints, self.ingresses,
                         self.target_group_bindings):
                try:
                    step()
                except ApiError as e:
                    log(f"controller {step.__name__}: {e.message}")
                except Exception as e:  # noqa: BLE001
                    import traceback
                    traceback.print_exc(file=sys.stderr)
                    log(f"controller {step.__name__} failed: {e}")
            self.stop.wait(0.05)

    # ------------------------------------------------------------------ helpers
    def rt(self, group, plural):
        return self.s.rt_any(group, plural)

    # ------------------------------------------------------------------ CRDs
    def crds(self) -> None:
        self.s.establish_crds()

    # ------------------------------------------------------------------ namespaces
    def namespaces(self) -> None:
        s = self.s
        ns_rt = self.rt("", "namespaces")
        with s.lock:
            for ns in list(s.all_of(ns_rt.gp)):
                md = ns["metadata"]
                name = md["name"]
                if not md.get("deletionTimestamp"):
                    if md["uid"] not in self.ns_done:
                        self.ns_done.add(md["uid"])
                        sa = self.rt("", "serviceaccounts")
                        if s.find(sa, name, "default") is None:
                            s._create_internal(sa, name, {"metadata": {"name": "default"}}, KCM)
                        cm = self.rt("", "configmaps")
                        if s.find(cm, name, "kube-root-ca.crt") is None:
                            s._create_internal(cm, name, {"metadata": {
                                "name": "kube-root-ca.crt",
                                "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                                "data": {"ca.crt": self.config.get("_ca_pem", "")}}, "kube-root-ca-cert-publisher")
                    continue
                t0 = self.ns_terminating.setdefault(md["uid"], time.monotonic())
                if time.monotonic() - t0 < float(self.config.get("namespace_delay", 1.0)):
                    continue
                remaining = 0
                for (_g, _v, _p), rt in list(s.types.items()):
                    if not rt.namespaced:
                        continue
                    for o in list(s.all_of(rt.gp)):
                        if o["metadata"].get("namespace") != name:
                            continue
                        remaining += 1
                        if not o["metadata"].get("deletionTimestamp"):
                            s.delete(rt, name, o["metadata"]["name"], {"propagationPolicy": "Background"})
                # count what is left after this pass
                left = sum(1 for (_g, _v, _p), rt in s.types.items() if rt.namespaced
                           for o in s.all_of(rt.gp) if o["metadata"].get("namespace") == name)
                if left == 0 and md.get("finalizers"):
                    # Its content is gone; other controllers' finalizers on the
                    # namespace itself keep it until they remove them.
                    continue
                if left == 0:
                    s.remove_now(ns_rt, ns)
                    self.ns_done.discard(md["uid"])
                    self.ns_terminating.pop(md["uid"], None)
                elif remaining:
                    st = ns.get("status") or {}
                    conds = [{"type": "NamespaceFinalizersRemaining", "status": "True",
                              "lastTransitionTime": now_ts(), "reason": "SomeFinalizersRemain",
                              "message": "Some content in the namespace has finalizers remaining"}]
                    if [c.get("type") for c in st.get("conditions", [])] != [c["type"] for c in conds]:
                        new = copy.deepcopy(ns)
                        new.setdefault("status", {})["conditions"] = conds
                        s.update(ns_rt, None, name, new, "namespace-controller", "status")

    # ------------------------------------------------------------------ garbage collection
    def gc(self) -> None:
        s = self.s
        with s.lock:
            uids = s.uids()
            by_uid = {}
            for gp, objs in s.objects.items():
                for o in objs.values():
                    by_uid[o["metadata"]["uid"]] = (gp, o)
            deps: dict[str, list] = {}
            for gp, objs in list(s.objects.items()):
                for o in list(objs.values()):
                    for ref in o["metadata"].get("ownerReferences") or []:
                        deps.setdefault(ref.get("uid"), []).append((gp, o))
            # owners being deleted in the foreground / orphaning
            for uid, (gp, o) in list(by_uid.items()):
                md = o["metadata"]
                if not md.get("deletionTimestamp"):
                    continue
                fins = md.get("finalizers") or []
                rt = self.rt(*gp)
                if rt is None:
                    continue
                if "orphan" in fins:
                    for dgp, d in deps.get(uid, []):
                        drt = self.rt(*dgp)
                        new = copy.deepcopy(d)
                        new["metadata"]["ownerReferences"] = [r for r in d["metadata"].get("ownerReferences") or []
                                                              if r.get("uid") != uid]
                        if not new["metadata"]["ownerReferences"]:
                            new["metadata"].pop("ownerReferences")
                        s.update(drt, d["metadata"].get("namespace"), d["metadata"]["name"], new, "generic-garbage-collector")
                    s.remove_finalizer(rt, o, "orphan", "generic-garbage-collector")
                elif "foregroundDeletion" in fins:
                    alive = [(dgp, d) for dgp, d in deps.get(uid, []) if s.find(self.rt(*dgp), d["metadata"].get("namespace"), d["metadata"]["name"]) is not None]
                    for dgp, d in alive:
                        if not d["metadata"].get("deletionTimestamp"):
                            s.delete(self.rt(*dgp), d["metadata"].get("namespace"), d["metadata"]["name"],
                                     {"propagationPolicy": "Foreground"})
                    if not alive:
                        s.remove_finalizer(rt, o, "foregroundDeletion", "generic-garbage-collector")
            # dependents whose owners are all gone
            uids = s.uids()
            for gp, objs in list(s.objects.items()):
                for o in list(objs.values()):
                    refs = o["metadata"].get("ownerReferences") or []
                    if refs and not any(r.get("uid") in uids for r in refs) and not o["metadata"].get("deletionTimestamp"):
                        rt = self.rt(*gp)
                        if rt is not None:
                            s.delete(rt, o["metadata"].get("namespace"), o["metadata"]["name"],
                                     {"propagationPolicy": "Background"})

    # ------------------------------------------------------------------ deployments
    def deployments(self) -> None:
        """The Deployment controller (rolling update: a new ReplicaSet per template, old ReplicaSets keep the
        Pods the new one cannot replace yet), with the scheduler and kubelet of the Pods they own."""
        s = self.s
        drt, rsrt = self.rt("apps", "deployments"), self.rt("apps", "replicasets")
        delay = float(self.config.get("deployment_delay", 1.0))
        scale = float(self.config.get("time_scale", 1.0))
        now = time.monotonic()
        with s.lock:
            for d in list(s.all_of(drt.gp)):
                md = d["metadata"]
                if md.get("deletionTimestamp"):
                    continue
                ns, name, uid, gen = md["namespace"], md["name"], md["uid"], md.get("generation", 1)
                spec = d.get("spec") or {}
                tpl = spec.get("template") or {}
                want = int(spec.get("replicas", 1))
                h = hashlib.sha256(json.dumps(tpl, sort_keys=True).encode()).hexdigest()
                phash = "".join(c for c in h if c in "bcdf256789")[:10] or h[:10]
                rs_name = f"{name}-{phash}"
                owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid,
                         "controller": True, "blockOwnerDeletion": True}
                owned = [o for o in s.all_of(rsrt.gp) if o["metadata"].get("namespace") == ns
                         and not o["metadata"].get("deletionTimestamp")
                         and any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])]
                revisions = [_revision(o) for o in owned]
                # the new ReplicaSet
                rs = s.find(rsrt, ns, rs_name)
                rs_tpl = copy.deepcopy(tpl)
                rs_tpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = phash
                sel = copy.deepcopy(spec.get("selector") or {})
                sel.setdefault("matchLabels", {})["pod-template-hash"] = phash
                if rs is None:
                    rs = s._create_internal(rsrt, ns, {
                        "metadata": {"name": rs_name, "labels": dict(rs_tpl["metadata"]["labels"]),
                                     "annotations": {"deployment.kubernetes.io/revision": str(max(revisions + [0]) + 1)},
                                     "ownerReferences": [owner]},
                        "spec": {"replicas": want, "selector": sel, "template": rs_tpl}}, KCM)
                elif (rs.get("spec") or {}).get("replicas") != want or _revision(rs) < max(revisions + [0]):
                    new = copy.deepcopy(rs)
                    new["spec"]["replicas"] = want
                    if _revision(rs) < max(revisions + [0]):  # an older template back again (rollback)
                        new["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = \
                            str(max(revisions) + 1)
                    s.update(rsrt, ns, rs_name, new, KCM)
                    rs = s.find(rsrt, ns, rs_name)
                new_pods = self._sync_pods(ns, rs, want)
                new_ready = sum(1 for p in new_pods if _pod_ready(p))
                # old ReplicaSets (newest first) keep as many Pods as the new one still lacks ready ones;
                # Recreate: none
                keep = 0 if (spec.get("strategy") or {}).get("type") == "Recreate" else max(0, want - new_ready)
                pods_of = {rs_name: new_pods}
                olds = sorted((o for o in owned if o["metadata"]["name"] != rs_name), key=_revision, reverse=True)
                for other in olds:
                    omd = other["metadata"]
                    cur = int((other.get("spec") or {}).get("replicas", 0))
                    n = min(cur, keep)
                    keep -= n
                    if n != cur:
                        new = copy.deepcopy(other)
                        new["spec"]["replicas"] = n
                        s.update(rsrt, ns, omd["name"], new, KCM)
                    pods_of[omd["name"]] = self._sync_pods(ns, s.find(rsrt, ns, omd["name"]) or other, n)
                # ReplicaSet statuses
                spec_total = 0
                for rname, pods in pods_of.items():
                    cur = s.find(rsrt, ns, rname)
                    if cur is None:
                        continue
                    spec_total += int((cur.get("spec") or {}).get("replicas", 0))
                    ready = sum(1 for p in pods if _pod_ready(p))
                    rst = {"replicas": len(pods), "fullyLabeledReplicas": len(pods), "readyReplicas": ready,
                           "availableReplicas": ready, "observedGeneration": cur["metadata"].get("generation", 1)}
                    rst = {k: v for k, v in rst.items() if v or k in ("replicas", "observedGeneration")}
                    if rst != (cur.get("status") or {}):
                        new = copy.deepcopy(cur)
                        new["status"] = rst
                        s.update(rsrt, ns, rname, new, KCM, "status")
                # Deployment status, counted from the Pods (minReadySeconds ignored: ready is available)
                total = sum(len(p) for p in pods_of.values())
                ready = sum(1 for pods in pods_of.values() for p in pods if _pod_ready(p))
                st = {"observedGeneration": gen, "replicas": total, "updatedReplicas": len(new_pods),
                      "readyReplicas": ready, "availableReplicas": ready,
                      "unavailableReplicas": max(0, spec_total - ready)}
                st = {k: v for k, v in st.items() if v or k == "observedGeneration"}  # omitempty
                key = (uid, gen)
                complete = key in self.completed or (len(new_pods) == want and total == want and ready >= want)
                if complete:
                    self.completed.add(key)
                # progress (DeploymentProgressing): more updated, fewer old, more ready or available replicas
                cur_st = d.get("status") or {}
                marks = (len(new_pods), -(total - len(new_pods)), ready)
                last = self.progress.get(key)
                if last is None or any(a > b for a, b in zip(marks, last[0])):
                    self.progress[key] = (marks, now)
                elif marks != last[0]:
                    self.progress[key] = (marks, last[1])
                deadline = float(spec.get("progressDeadlineSeconds", 600)) * scale
                timed_out = not complete and now - self.progress[key][1] >= max(deadline, delay)
                conds = {c["type"]: c for c in cur_st.get("conditions") or []}
                ts = now_ts()

                def cond(typ, status, reason, message):
                    old = conds.get(typ)
                    c = {"type": typ, "status": status, "lastUpdateTime": ts, "lastTransitionTime": ts,
                         "reason": reason, "message": message}
                    if old and old.get("status") == status:
                        c["lastTransitionTime"] = old.get("lastTransitionTime", ts)
                        if old.get("reason") == reason and old.get("message") == message:
                            c["lastUpdateTime"] = old.get("lastUpdateTime", ts)
                    return c

                av = ready >= want - _max_unavailable(spec, want)
                cl = [cond("Available", "True" if av else "False",
                           "MinimumReplicasAvailable" if av else "MinimumReplicasUnavailable",
                           "Deployment has minimum availability." if av else "Deployment does not have minimum availability.")]
                if complete:
                    cl.append(cond("Progressing", "True", "NewReplicaSetAvailable",
                                   f'ReplicaSet "{rs_name}" has successfully progressed.'))
                elif timed_out:
                    cl.append(cond("Progressing", "False", "ProgressDeadlineExceeded",
                                   f'ReplicaSet "{rs_name}" has timed out progressing.'))
                else:
                    cl.append(cond("Progressing", "True", "ReplicaSetUpdated",
                                   f'ReplicaSet "{rs_name}" is progressing.'))
                st["conditions"] = cl
                if _strip_times(st) != _strip_times(cur_st):
                    new = copy.deepcopy(d)
                    new["status"] = st
                    s.update(drt, ns, name, new, KCM, "status")
        self._prune()

    def _prune(self) -> None:
        """Forget the kubelet's records of Pods that are gone (every 10 s)."""
        now = time.monotonic()
        if now - self._pruned < 10:
            return
        self._pruned = now
        with self.s.lock:
            uids = {p["metadata"]["uid"] for p in self.s.all_of(("", "pods"))}
        for uid in set(self.pod_sim) - uids:
            self.pod_sim.pop(uid, None)

    def _rs_pods(self, ns, rs) -> list:
        uid = rs["metadata"]["uid"]
        return [p for p in self.s.all_of(self.rt("", "pods").gp) if p["metadata"].get("namespace") == ns
                and any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])
                and not p["metadata"].get("deletionTimestamp")]

    def _sync_pods(self, ns, rs, want) -> list:
        """The ReplicaSet controller (Pods to `want`, not-ready ones removed first) and, for each of its Pods,
        the scheduler and the kubelet. Returns its live Pods."""
        s = self.s
        prt = self.rt("", "pods")
        rs_uid = rs["metadata"]["uid"]
        pods = self._rs_pods(ns, rs)
        if len(pods) > want:  # not-ready Pods go first, then the newest
            pods.sort(key=lambda p: (not _pod_ready(p), p["metadata"].get("creationTimestamp", "")))
            for p in pods[want:]:
                s.delete(prt, ns, p["metadata"]["name"], {})
                self.pod_sim.pop(p["metadata"]["uid"], None)
        tpl = (rs.get("spec") or {}).get("template") or {}
        unschedulable = _matches(ns, self.config.get("unschedulable_namespaces"))
        for i in range(want - len(pods)):
            pspec = copy.deepcopy(tpl.get("spec") or {})
            if not unschedulable:
                pspec.setdefault("nodeName", _node_name(len(pods) + i))
            s._create_internal(prt, ns, {
                "metadata": {"name": f"{rs['metadata']['name']}-{_rand(5)}",
                             "labels": dict((tpl.get("metadata") or {}).get("labels") or {}),
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                  "name": rs["metadata"]["name"], "uid": rs_uid,
                                                  "controller": True, "blockOwnerDeletion": True}]},
                "spec": pspec, "status": {"phase": "Pending", "qosClass": "BestEffort"}}, KCM)
        out = []
        for p in self._rs_pods(ns, rs):
            self._kubelet(p)
            out.append(s.find(prt, ns, p["metadata"]["name"]))
        return [p for p in out if p is not None]

    def _kubelet(self, p) -> None:
        """Scheduler and kubelet for one Pod: bound to a node unless its namespace is unschedulable; its
        containers created after `deployment_delay`, then running and ready -- or failing as their image is
        configured to (unpullable, crashing, unready); Ready = ContainersReady and every readiness gate."""
        s = self.s
        prt = self.rt("", "pods")
        cfg = self.config
        md, spec = p["metadata"], p.get("spec") or {}
        ns, name, uid = md["namespace"], md["name"], md["uid"]
        old = p.get("status") or {}
        ts = now_ts()
        if not spec.get("nodeName"):
            if _matches(ns, cfg.get("unschedulable_namespaces")):
                st = {"phase": "Pending", "conditions": [_pod_cond(old, "PodScheduled", "False", "Unschedulable",
                                                                    "0/0 nodes are available: no nodes available to schedule pods.")],
                      "qosClass": old.get("qosClass", "BestEffort")}
                self._write_pod_status(p, st)
                return
            new = copy.deepcopy(p)  # bound (pods/binding)
            new["spec"]["nodeName"] = _node_name(int(uid[:2], 16) % 100)
            s.update(prt, ns, name, new, "kube-scheduler")
            p = s.find(prt, ns, name)
            spec = p.get("spec") or {}
        now, wall = time.monotonic(), time.time()
        sim = self.pod_sim.setdefault(uid, {"t0": now, "started": {}, "crash": {}, "restarts": {}, "events": {}})
        elapsed = now - sim["t0"]
        delay = float(cfg.get("deployment_delay", 1.0))
        scale = float(cfg.get("time_scale", 1.0))
        statuses, unready = [], []
        created = True
        for c in spec.get("containers") or []:
            cname, image = c.get("name"), c.get("image")
            entry = {"name": cname, "image": image, "imageID": "", "restartCount": sim["restarts"].get(cname, 0),
                     "ready": False, "started": False}
            if cname not in sim["started"]:
                if _matches(image, cfg.get("unpullable_images")):
                    reason = "ErrImagePull" if elapsed < 0.5 else "ImagePullBackOff"
                    msg = (f'Back-off pulling image "{image}"' if reason == "ImagePullBackOff" else
                           f'failed to pull and unpack image "{image}": not found')
                    entry["state"] = {"waiting": {"reason": reason, "message": msg}}
                    self._event(p, cname, "Failed", f'Failed to pull image "{image}": not found', 10 * scale)
                    if reason == "ImagePullBackOff":
                        self._event(p, cname, "BackOff", f'Back-off pulling image "{image}"', 10 * scale)
                elif elapsed < delay:
                    entry["state"] = {"waiting": {"reason": "ContainerCreating"}}
                else:
                    sim["started"][cname] = wall
            if cname in sim["started"]:
                entry["imageID"] = "docker.io/" + str(image)
                entry["containerID"] = "containerd://" + hashlib.sha256(
                    f"{uid}/{cname}/{entry['restartCount']}".encode()).hexdigest()
                if _matches(image, cfg.get("crashing_images")):
                    t0 = sim["crash"].setdefault(cname, (now, wall))
                    k, since, backoff = _crash_loop(now - t0[0], scale)
                    entry["restartCount"] = sim["restarts"].get(cname, 0) + k + 1
                    crashed = _ts(t0[1] + since)
                    entry["containerID"] = "containerd://" + hashlib.sha256(
                        f"{uid}/{cname}/{entry['restartCount']}".encode()).hexdigest()
                    entry["state"] = {"waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off {_go_duration(backoff)} restarting failed container={cname} "
                                   f"pod={name}_{ns}({uid})"}}
                    entry["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": crashed,
                                                         "finishedAt": crashed, "containerID": entry["containerID"]}}
                    self._event(p, cname, "BackOff", f"Back-off restarting failed container {cname} in pod "
                                                     f"{name}_{ns}({uid})", backoff * scale)
                else:
                    if cname in sim["crash"]:  # no longer crashing: restarted once more, and it runs
                        t0 = sim["crash"].pop(cname)
                        k, _since, _b = _crash_loop(now - t0[0], scale)
                        sim["restarts"][cname] = sim["restarts"].get(cname, 0) + k + 2
                        entry["restartCount"] = sim["restarts"][cname]
                        sim["started"][cname] = wall
                    entry["state"] = {"running": {"startedAt": _ts(sim["started"][cname])}}
                    entry["started"] = True
                    if _matches(image, cfg.get("unready_images")):
                        self._event(p, cname, "Unhealthy",
                                    "Readiness probe failed: HTTP probe failed with statuscode: 503", 10 * scale)
                    else:
                        entry["ready"] = True
            else:
                created = False
            if not entry["ready"]:
                unready.append(cname)
            statuses.append(entry)
        ip = old.get("podIP") or s.alloc_pod_ip()
        containers_ready = not unready
        msg = f"containers with unready status: [{' '.join(unready)}]"
        gates = [g.get("conditionType") for g in spec.get("readinessGates") or [] if isinstance(g, dict)]
        have = {c.get("type"): c for c in old.get("conditions") or []}
        if not containers_ready:
            ready = ("False", "ContainersNotReady", msg)
        else:
            gate_msgs = []
            for g in gates:
                c = have.get(g)
                if c is None:
                    gate_msgs.append(f'corresponding condition of pod readiness gate "{g}" does not exist.')
                elif c.get("status") != "True":
                    gate_msgs.append(f'the status of pod readiness gate "{g}" is not "True", but {c.get("status")}')
            ready = ("False", "ReadinessGatesNotReady", ", ".join(gate_msgs)) if gate_msgs else ("True", None, None)
        conditions = [
            _pod_cond(old, "PodScheduled", "True"),
            _pod_cond(old, "Initialized", "True"),
            _pod_cond(old, "ContainersReady", "True" if containers_ready else "False",
                      None if containers_ready else "ContainersNotReady", None if containers_ready else msg),
            _pod_cond(old, "Ready", *ready),
        ]
        # conditions others own (the readiness gates' target-health.elbv2.k8s.aws/...) are kept
        conditions += [c for t, c in have.items() if t not in POD_CONDITIONS]
        st = {"phase": "Running" if created else "Pending", "qosClass": "BestEffort", "containerStatuses": statuses,
              "hostIP": "10.0.1.10", "hostIPs": [{"ip": "10.0.1.10"}], "podIP": ip, "podIPs": [{"ip": ip}],
              "conditions": conditions, "startTime": old.get("startTime", ts)}
        self._write_pod_status(p, st)

    def _write_pod_status(self, p, st) -> None:
        if _strip_times(st) != _strip_times(p.get("status") or {}):
            new = copy.deepcopy(p)
            new["status"] = st
            self.s.update(self.rt("", "pods"), p["metadata"]["namespace"], p["metadata"]["name"], new,
                          "kubelet", "status")

    def _event(self, pod, container, reason, message, every) -> None:
        """A core/v1 Event from the kubelet about `pod` (Warning), repeated (count, lastTimestamp) at most every
        `every` seconds (at least 0.5 s)."""
        s = self.s
        ert = self.rt("", "events")
        md = pod["metadata"]
        sim = self.pod_sim.get(md["uid"])
        if ert is None or sim is None:
            return
        now = time.monotonic()
        key = (container, reason, message)
        seen = sim["events"].get(key)
        if seen is not None and now - seen[1] < max(0.5, every):
            return
        ns, node = md["namespace"], (pod.get("spec") or {}).get("nodeName", "")
        ts = now_ts()
        if seen is not None:
            cur = s.find(ert, ns, seen[0])
            if cur is not None:
                new = copy.deepcopy(cur)
                new["count"] = int(cur.get("count") or 1) + 1
                new["lastTimestamp"] = ts
                s.update(ert, ns, seen[0], new, "kubelet")
                sim["events"][key] = (seen[0], now)
                return
        ename = f"{md['name']}.{time.time_ns():x}"[:253]
        s._create_internal(ert, ns, {
            "metadata": {"name": ename},
            "involvedObject": {"kind": "Pod", "namespace": ns, "name": md["name"], "uid": md["uid"],
                               "apiVersion": "v1", "resourceVersion": md.get("resourceVersion", ""),
                               "fieldPath": f"spec.containers{{{container}}}"},
            "reason": reason, "message": message, "source": {"component": "kubelet", "host": node},
            "firstTimestamp": ts, "lastTimestamp": ts, "count": 1, "type": "Warning", "eventTime": None,
            "reportingComponent": "kubelet", "reportingInstance": node}, "kubelet")
        sim["events"][key] = (ename, now)

    # ------------------------------------------------------------------ Endpoints / EndpointSlices
    def endpoints(self) -> None:
        """The endpoints and endpointslice controllers: every Service with a selector gets an Endpoints of
        its name and EndpointSlices (one per set of resolved ports) listing the Pods it selects."""
        s = self.s
        srt, prt, nsrt = self.rt("", "services"), self.rt("", "pods"), self.rt("", "namespaces")
        ert, esrt = self.rt("", "endpoints"), self.rt("discovery.k8s.io", "endpointslices")
        with s.lock:
            pods: dict[str, list] = {}
            for p in s.all_of(prt.gp):
                pods.setdefault(p["metadata"]["namespace"], []).append(p)
            live = {}
            for svc in list(s.all_of(srt.gp)):
                md = svc["metadata"]
                ns = md["namespace"]
                live[(ns, md["name"])] = md["uid"]
                spec = svc.get("spec") or {}
                sel = spec.get("selector") or {}
                if not sel or spec.get("type") == "ExternalName" or md.get("deletionTimestamp"):
                    continue  # left alone, as the real controllers do
                nso = s.find(nsrt, None, ns)
                if nso is None or nso["metadata"].get("deletionTimestamp"):
                    continue  # no new content in a Terminating namespace
                selected = [p for p in pods.get(ns, [])
                            if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items())]
                self._sync_endpoints(ert, svc, selected)
                self._sync_slices(esrt, svc, selected)
            # a Service that went takes its Endpoints with it (its slices go by their ownerReference)
            for key in set(self.ep_services) - set(live):
                cur = s.find(ert, *key)
                if cur is not None and not cur["metadata"].get("deletionTimestamp"):
                    s.delete(ert, key[0], key[1], {})
            self.ep_services = live

    def _sync_endpoints(self, ert, svc, pods) -> None:
        s = self.s
        md, spec = svc["metadata"], svc.get("spec") or {}
        ns, name = md["namespace"], md["name"]
        tolerate = bool(spec.get("publishNotReadyAddresses"))
        headless = not _service_ip_set(spec)
        entries = []  # (address, ready, port or None)
        for p in pods:
            if not _in_endpoints(p, tolerate):
                continue
            pmd, pspec = p["metadata"], p.get("spec") or {}
            addr = {"ip": p["status"].get("podIP") or _pod_ips(p)[0]}
            if pspec.get("hostname") and pspec.get("subdomain") == name:
                addr["hostname"] = pspec["hostname"]
            if pspec.get("nodeName"):
                addr["nodeName"] = pspec["nodeName"]
            addr["targetRef"] = {"kind": "Pod", "namespace": ns, "name": pmd["name"], "uid": pmd["uid"]}
            ready = tolerate or _pod_ready(p)
            sports = spec.get("ports") or []
            if not sports:
                if headless:
                    entries.append((addr, ready, None))
                continue
            for sp in sports:
                num = _find_port(p, sp)
                if num is None:
                    continue
                port = {"name": sp["name"]} if sp.get("name") else {}
                port.update(port=num, protocol=sp.get("protocol", "TCP"))
                if sp.get("appProtocol"):
                    port["appProtocol"] = sp["appProtocol"]
                entries.append((addr, ready, port))
        subsets = _repack(entries)
        labels = dict(md.get("labels") or {})
        if headless:
            labels[LABEL_HEADLESS] = ""
        else:
            labels.pop(LABEL_HEADLESS, None)
        cur = s.find(ert, ns, name)
        if cur is not None and (cur.get("subsets") or []) == subsets and (cur["metadata"].get("labels") or {}) == labels:
            return  # unchanged: no write, no new resourceVersion
        new = copy.deepcopy(cur) if cur is not None else {"metadata": {"name": name}}
        nmd = new["metadata"]
        nmd["labels"] = labels
        if not labels:
            nmd.pop("labels")
        nmd.setdefault("annotations", {})[TRIGGER_TIME] = now_ts()
        new["subsets"] = subsets
        if not subsets:
            new.pop("subsets")  # omitempty, as the real server returns it
        if cur is None:
            s._create_internal(ert, ns, new, EP_MANAGER)
        else:
            s.update(ert, ns, name, new, EP_MANAGER)

    def _sync_slices(self, esrt, svc, pods) -> None:
        s = self.s
        md, spec = svc["metadata"], svc.get("spec") or {}
        ns, name, uid = md["namespace"], md["name"], md["uid"]
        tolerate = bool(spec.get("publishNotReadyAddresses"))
        desired: dict[str, tuple] = {}  # ports key -> (ports, endpoints)
        for p in pods:
            if not _in_endpoints(p, True):
                continue
            addrs = [ip for ip in _pod_ips(p) if ":" not in ip]  # addressType IPv4
            if not addrs:
                continue
            pmd, pspec = p["metadata"], p.get("spec") or {}
            ports = []
            for sp in spec.get("ports") or []:
                num = _find_port(p, sp)
                if num is None:
                    continue
                port = {"name": sp.get("name", ""), "protocol": sp.get("protocol", "TCP"), "port": num}
                if sp.get("appProtocol"):
                    port["appProtocol"] = sp["appProtocol"]
                ports.append(port)
            serving = _pod_ready(p)
            terminating = bool(pmd.get("deletionTimestamp"))
            ep = {"addresses": addrs,
                  "conditions": {"ready": tolerate or (serving and not terminating), "serving": serving,
                                 "terminating": terminating}}
            if pspec.get("hostname") and pspec.get("subdomain") == name:
                ep["hostname"] = pspec["hostname"]
            ep["targetRef"] = {"kind": "Pod", "namespace": ns, "name": pmd["name"], "uid": pmd["uid"]}
            if pspec.get("nodeName"):
                ep["nodeName"] = pspec["nodeName"]
            desired.setdefault(_ports_key(ports), (ports, []))[1].append(ep)
        labels = {k: v for k, v in (md.get("labels") or {}).items() if k not in (LABEL_SERVICE_NAME, LABEL_MANAGED_BY)}
        if _service_ip_set(spec):
            labels.pop(LABEL_HEADLESS, None)
        else:
            labels[LABEL_HEADLESS] = ""
        labels[LABEL_SERVICE_NAME] = name
        labels[LABEL_MANAGED_BY] = EPS_CONTROLLER
        existing = [sl for sl in s.all_of(esrt.gp) if sl["metadata"].get("namespace") == ns
                    and (sl["metadata"].get("labels") or {}).get(LABEL_SERVICE_NAME) == name
                    and (sl["metadata"].get("labels") or {}).get(LABEL_MANAGED_BY) == EPS_CONTROLLER
                    and not sl["metadata"].get("deletionTimestamp")]
        delete, by_key = [], {}
        for sl in existing:
            owned = any(r.get("uid") == uid and r.get("kind") == "Service"
                        for r in sl["metadata"].get("ownerReferences") or [])
            if owned:
                by_key.setdefault(_ports_key(sl.get("ports") or []), []).append(sl)
            else:
                delete.append(sl)

        def same(sl, ports, eps):
            return (sl.get("addressType") == "IPv4" and (sl.get("endpoints") or None) == (eps or None)
                    and (sl.get("ports") or None) == (ports or None)
                    and (sl["metadata"].get("labels") or {}) == labels)

        def create(ports, eps):
            prefix = f"{name}-"
            while True:
                sname = prefix[:58] + _rand(5)
                if s.find(esrt, ns, sname) is None:
                    break
            s._create_internal(esrt, ns, {
                "metadata": {"name": sname, "generateName": prefix, "labels": dict(labels),
                             "annotations": {TRIGGER_TIME: now_ts()},
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name, "uid": uid,
                                                  "controller": True, "blockOwnerDeletion": True}]},
                # empty lists come back as null from the real server (protobuf storage)
                "addressType": "IPv4", "endpoints": eps or None, "ports": ports or None}, EPS_MANAGER)

        if desired:
            for key, (ports, eps) in sorted(desired.items()):
                eps.sort(key=lambda e: (e["addresses"][0], e["targetRef"]["name"]))
                cands = by_key.pop(key, [])
                if not cands:
                    create(ports, eps)
                    continue
                keep = cands[0]
                delete += cands[1:]
                if not same(keep, ports, eps):
                    new = copy.deepcopy(keep)
                    new["metadata"]["labels"] = dict(labels)
                    new["metadata"].setdefault("annotations", {})[TRIGGER_TIME] = now_ts()
                    new["addressType"], new["endpoints"], new["ports"] = "IPv4", eps or None, ports or None
                    s.update(esrt, ns, keep["metadata"]["name"], new, EPS_MANAGER)
            delete += [sl for sls in by_key.values() for sl in sls]
        else:
            # nothing selected: one placeholder slice without endpoints or ports (kept if it is already there)
            left = [sl for sls in by_key.values() for sl in sls]
            if len(left) == 1 and same(left[0], [], []):
                left = []
            else:
                create([], [])
            delete += left
        for sl in delete:
            s.delete(esrt, ns, sl["metadata"]["name"], {"propagationPolicy": "Background"})

    # ------------------------------------------------------------------ ALB ingress controller
    def _clients(self):
        if self._elb is None:
            import boto3
            kw = dict(region_name=self.aws["region"], endpoint_url=self.aws["endpoint"],
                      aws_access_key_id="testing", aws_secret_access_key="testing")
            self._elb = boto3.client("elbv2", **kw)
            self._ec2 = boto3.client("ec2", **kw)
        return self._elb, self._ec2

    @staticmethod
    def is_alb(ing: dict) -> bool:
        spec = ing.get("spec") or {}
        ann = (ing["metadata"].get("annotations") or {})
        return spec.get("ingressClassName") == "alb" or ann.get("kubernetes.io/ingress.class") == "alb"

    @staticmethod
    def stack(ing: dict) -> str:
        ann = ing["metadata"].get("annotations") or {}
        g = ann.get("alb.ingress.kubernetes.io/group.name")
        return g if g else f"{ing['metadata']['namespace']}/{ing['metadata']['name']}"

    def lb_name(self, ing: dict) -> str:
        ann = ing["metadata"].get("annotations") or {}
        if ann.get("alb.ingress.kubernetes.io/load-balancer-name"):
            return ann["alb.ingress.kubernetes.io/load-balancer-name"]
        ns, name = ing["metadata"]["namespace"], ing["metadata"]["name"]
        h = hashlib.sha256(f"{self.aws['cluster']}/{self.stack(ing)}".encode()).hexdigest()[:10]
        group = ann.get("alb.ingress.kubernetes.io/group.name")
        if group:
            return f"k8s-{group[:17]}-{h}".replace("--", "-")
        return f"k8s-{ns[:8]}-{name[:8]}-{h}".replace("--", "-")

    def alb_controller_running(self) -> bool:
        """Whether the AWS Load Balancer Controller's Deployment
        (kube-system/aws-load-balancer-controller) has an available replica:
        without it nothing acts on Ingresses, their load balancers or their
        finalizers, as in a real cluster."""
        d = self.s.find(self.rt("apps", "deployments"), "kube-system", "aws-load-balancer-controller")
        return (d is not None and not d["metadata"].get("deletionTimestamp")
                and int((d.get("status") or {}).get("availableReplicas") or 0) >= 1)

    def ingresses(self) -> None:
        """The AWS Load Balancer Controller's Ingress reconciler: per stack (an Ingress, or an IngressGroup)
        an ALB, a target group per backend, a listener and a TargetGroupBinding per target group; on
        deletion, all of it."""
        s = self.s
        irt = self.rt("networking.k8s.io", "ingresses")
        with s.lock:
            if not self.alb_controller_running():
                return
        delay = float(self.config.get("ingress_delay", 1.0))
        now = time.monotonic()
        work, stacks = [], {}
        with s.lock:
            for ing in s.all_of(irt.gp):
                if not self.is_alb(ing):
                    continue
                md = ing["metadata"]
                uid = md["uid"]
                if md.get("deletionTimestamp"):
                    if ALB_FINALIZER in (md.get("finalizers") or []) and self.ing_retry.get(uid, 0) <= now:
                        # an IngressGroup's ALB stays while another member of the group lives
                        shared = any(o is not ing and self.is_alb(o) and not o["metadata"].get("deletionTimestamp")
                                     and self.stack(o) == self.stack(ing) for o in s.all_of(irt.gp))
                        work.append(("release" if shared else "delete", self.stack(ing), copy.deepcopy(ing)))
                    continue
                t0 = self.ing_seen.setdefault(uid, now)
                if now - t0 < delay:
                    continue
                if ALB_FINALIZER not in (md.get("finalizers") or []):
                    new = copy.deepcopy(ing)
                    new["metadata"]["finalizers"] = list(md.get("finalizers") or []) + [ALB_FINALIZER]
                    s.update(irt, md["namespace"], md["name"], new, "ingress")
                    continue
                stacks.setdefault(self.stack(ing), []).append(ing)
            for stack, members in stacks.items():
                if self.ing_retry.get(stack, 0) > now:
                    continue
                unset = any(not ((m.get("status") or {}).get("loadBalancer") or {}).get("ingress") for m in members)
                fp = self._stack_fingerprint(stack, members)
                if unset or self.stack_fp.get(stack) != fp:
                    work.append(("create", stack, fp))
        for op, stack, arg in work:
            try:
                if op == "create":
                    host = self.reconcile_stack(stack)
                    with s.lock:
                        # what it is made from now (with the bindings just made), so the next pass does not redo it
                        members = self._members(stack)
                        self.stack_fp[stack] = self._stack_fingerprint(stack, members) if members else arg
                        for m in members:
                            if ((m.get("status") or {}).get("loadBalancer") or {}).get("ingress") != [{"hostname": host}]:
                                new = copy.deepcopy(m)
                                new["status"] = {"loadBalancer": {"ingress": [{"hostname": host}]}}
                                s.update(irt, m["metadata"]["namespace"], m["metadata"]["name"], new, "controller",
                                         "status")
                    continue
                ing = arg
                md = ing["metadata"]
                if op == "delete":
                    self.delete_alb(ing)
                    self.stack_fp.pop(stack, None)
                else:
                    self.reconcile_stack(stack)  # the group without this member: its target groups go
                    self.stack_fp.pop(stack, None)
                with s.lock:
                    cur = s.find(irt, md["namespace"], md["name"])
                    if cur is not None and cur["metadata"]["uid"] == md["uid"]:
                        s.remove_finalizer(irt, cur, ALB_FINALIZER, "ingress")
                self.ing_seen.pop(md["uid"], None)
            except Exception as e:  # noqa: BLE001
                what = stack if op == "create" else f"{arg['metadata']['namespace']}/{arg['metadata']['name']}"
                log(f"ingress {what}: {op} failed: {e}; retrying in 1 s")
                self.ing_retry[stack if op == "create" else arg["metadata"]["uid"]] = time.monotonic() + 1.0

    def _members(self, stack: str) -> list:
        """The live ALB Ingresses of a stack that the controller has taken on (finalizer set), by namespace/name."""
        irt = self.rt("networking.k8s.io", "ingresses")
        return [i for i in self.s.all_of(irt.gp) if self.is_alb(i) and self.stack(i) == stack
                and not i["metadata"].get("deletionTimestamp")
                and ALB_FINALIZER in (i["metadata"].get("finalizers") or [])]

    def _tgb_rt(self):
        return self.s.rt(TGB_GROUP, "v1beta1", "targetgroupbindings") or self.rt(TGB_GROUP, "targetgroupbindings")

    def _stack_fingerprint(self, stack: str, members: list) -> str:
        """What the stack's AWS objects and bindings are made from: its Ingresses, their Services, whether
        TargetGroupBindings are served and the bindings there are. A change makes the controller reconcile."""
        s = self.s
        srt, trt = self.rt("", "services"), self._tgb_rt()
        parts = []
        for m in members:
            md = m["metadata"]
            parts.append([md["namespace"], md["name"], md["uid"], md.get("generation", 1)])
            for svc_name, _port in _backends(m):
                svc = s.find(srt, md["namespace"], svc_name)
                parts.append([svc_name, svc["metadata"]["uid"] if svc else None, (svc or {}).get("spec", {}).get("ports")])
        tgbs = []
        if trt is not None:
            tgbs = sorted([t["metadata"]["namespace"], t["metadata"]["name"], t["metadata"]["uid"],
                           (t.get("spec") or {}).get("targetGroupARN"), bool(t["metadata"].get("deletionTimestamp"))]
                          for t in s.all_of(trt.gp) if _tgb_stack(t) == stack)
        return json.dumps([parts, trt is not None, tgbs], sort_keys=True)

    def _backend_plan(self, ing: dict) -> list:
        """(namespace, ingress, service, port as the Ingress names it, target group port, name) per distinct
        backend of an Ingress, in the order the Ingress lists them (defaultBackend first)."""
        s = self.s
        md = ing["metadata"]
        ns = md["namespace"]
        out = []
        for svc_name, port in _backends(ing):
            svc = s.find(self.rt("", "services"), ns, svc_name)
            tg_port = port if isinstance(port, int) else 80
            svc_uid = ""
            if svc is not None:
                svc_uid = svc["metadata"]["uid"]
                sp = _service_port(svc, port)
                if sp is not None:
                    tp = sp.get("targetPort", sp.get("port"))
                    tg_port = sp.get("port", tg_port)
                    if isinstance(tp, int) and not isinstance(tp, bool):
                        tg_port = tp
                    else:  # a named targetPort: the number the EndpointSlices resolved it to, if any
                        for sl in self._slices(ns, svc_name):
                            found = [p.get("port") for p in sl.get("ports") or [] if p.get("name", "") == sp.get("name", "")]
                            if found and found[0]:
                                tg_port = found[0]
                                break
            h = hashlib.sha256("".join([self.aws["cluster"], ns, md["name"], svc_uid, str(port), str(tg_port),
                                        "ip", "HTTP", "HTTP1"]).encode()).hexdigest()
            tg_name = f"k8s-{_alnum(ns)[:8]}-{_alnum(svc_name)[:8]}-{h[:10]}"
            out.append({"namespace": ns, "ingress": md["name"], "service": svc_name, "port": port,
                        "tg_port": int(tg_port), "name": tg_name,
                        "resource": f"{ns}/{md['name']}-{svc_name}:{port}"})
        return out

    def _slices(self, ns: str, service: str) -> list:
        esrt = self.rt("discovery.k8s.io", "endpointslices")
        return [sl for sl in self.s.all_of(esrt.gp) if sl["metadata"].get("namespace") == ns
                and (sl["metadata"].get("labels") or {}).get(LABEL_SERVICE_NAME) == service
                and not sl["metadata"].get("deletionTimestamp")]

    def _tags(self, stack: str, resource: str) -> list:
        return [{"Key": "elbv2.k8s.aws/cluster", "Value": self.aws["cluster"]},
                {"Key": "ingress.k8s.aws/stack", "Value": stack},
                {"Key": "ingress.k8s.aws/resource", "Value": resource}]

    def reconcile_stack(self, stack: str) -> str:
        """Make the stack's ALB, target groups (one per backend: ip, HTTP), its port-80 listener (default
        action: forward to the defaultBackend's target group, else the first one) and TargetGroupBindings;
        remove target groups no backend needs any more. Returns the ALB's DNS name."""
        s = self.s
        with s.lock:
            members = copy.deepcopy(self._members(stack))
            if not members:
                return ""
            plan, seen = [], set()
            for m in members:
                for b in self._backend_plan(m):
                    if b["resource"] not in seen:
                        seen.add(b["resource"])
                        plan.append(b)
            default = None
            for m in members:
                dbe = ((m.get("spec") or {}).get("defaultBackend") or {}).get("service")
                if dbe and default is None:
                    key = f"{m['metadata']['namespace']}/{m['metadata']['name']}-{dbe.get('name')}:{_port_of(dbe)}"
                    default = next((b["resource"] for b in plan if b["resource"] == key), None)
        first = members[0]
        lb_arn, host, vpc = self.create_alb(first)
        if not lb_arn:
            return host
        elb, _ = self._clients()
        existing = self._stack_target_groups(stack)
        arns = {}
        for b in plan:
            tg = existing.get(b["resource"])
            if tg is None:
                tg = elb.create_target_group(
                    Name=b["name"], Protocol="HTTP", ProtocolVersion="HTTP1", Port=b["tg_port"], VpcId=vpc,
                    TargetType="ip", IpAddressType="ipv4", HealthCheckProtocol="HTTP", HealthCheckPort="traffic-port",
                    HealthCheckPath="/", HealthCheckIntervalSeconds=15, HealthCheckTimeoutSeconds=5,
                    HealthyThresholdCount=2, UnhealthyThresholdCount=2, Matcher={"HttpCode": "200"},
                    Tags=self._tags(stack, b["resource"]))["TargetGroups"][0]
                log(f"created target group {b['name']} ({b['resource']}) for ingress stack {stack}")
            arns[b["resource"]] = tg["TargetGroupArn"]
        forward = arns.get(default) or (arns[plan[0]["resource"]] if plan else None)
        action = ({"Type": "forward", "TargetGroupArn": forward} if forward else
                  {"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "404", "ContentType": "text/plain"}})
        listeners = elb.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]
        http = next((x for x in listeners if x.get("Port") == 80), None)
        if http is None:
            elb.create_listener(LoadBalancerArn=lb_arn, Protocol="HTTP", Port=80, DefaultActions=[action],
                                Tags=self._tags(stack, "80"))
        elif [_action_key(a) for a in http.get("DefaultActions") or []] != [_action_key(action)]:
            elb.modify_listener(ListenerArn=http["ListenerArn"], DefaultActions=[action])
        # bindings, then target groups nothing uses any more
        self._ensure_bindings(stack, plan, arns, vpc)
        for resource, tg in existing.items():
            if resource not in arns:
                self._delete_bindings(tg["TargetGroupArn"])
                elb.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])
                log(f"deleted target group {tg['TargetGroupName']} ({resource}) of ingress stack {stack}")
        return host

    def _ensure_bindings(self, stack: str, plan: list, arns: dict, vpc: str) -> None:
        s = self.s
        with s.lock:
            trt = self._tgb_rt()
            if trt is None:
                key = (stack, tuple(sorted(arns.values())))
                if key not in self.unbound_logged:
                    self.unbound_logged.add(key)
                    log(f"TargetGroupBinding (targetgroupbindings.elbv2.k8s.aws) is not served: no binding made for "
                        f"the target groups of ingress stack {stack}")
                return
            nsrt = self.rt("", "namespaces")
            for b in plan:
                arn, ns = arns[b["resource"]], b["namespace"]
                nso = s.find(nsrt, None, ns)
                if nso is None or nso["metadata"].get("deletionTimestamp"):
                    continue
                if any((t.get("spec") or {}).get("targetGroupARN") == arn for t in s.all_of(trt.gp)
                       if t["metadata"].get("namespace") == ns):
                    continue  # there (or still being deleted: made again once it is gone)
                name = b["name"]
                if s.find(trt, ns, name) is not None:
                    name = f"{name[:26]}-{_rand(5)}"
                group = "/" not in stack
                labels = ({"ingress.k8s.aws/stack": stack} if group else
                          {"ingress.k8s.aws/stack-namespace": stack.split("/", 1)[0],
                           "ingress.k8s.aws/stack-name": stack.split("/", 1)[1]})
                s._create_internal(trt, ns, {
                    "metadata": {"name": name, "labels": labels, "finalizers": [TGB_FINALIZER]},
                    "spec": {"targetGroupARN": arn, "targetType": "ip", "ipAddressType": "ipv4", "vpcID": vpc,
                             "serviceRef": {"name": b["service"], "port": b["port"]}},
                    "status": {}}, "controller")
                log(f"created TargetGroupBinding {ns}/{name} for target group {arn}")

    def _delete_bindings(self, arn: str) -> None:
        s = self.s
        with s.lock:
            trt = self._tgb_rt()
            if trt is None:
                return
            for t in list(s.all_of(trt.gp)):
                if (t.get("spec") or {}).get("targetGroupARN") == arn and not t["metadata"].get("deletionTimestamp"):
                    s.delete(trt, t["metadata"]["namespace"], t["metadata"]["name"], {})

    def _find_lb(self, ing):
        if not self.aws.get("endpoint"):
            return None
        elb, _ = self._clients()
        arns = [lb["LoadBalancerArn"] for page in elb.get_paginator("describe_load_balancers").paginate()
                for lb in page["LoadBalancers"]]
        for i in range(0, len(arns), 20):
            for td in elb.describe_tags(ResourceArns=arns[i:i + 20])["TagDescriptions"]:
                tags = {t["Key"]: t["Value"] for t in td.get("Tags", [])}
                if tags.get("ingress.k8s.aws/stack") == self.stack(ing) and \
                        tags.get("elbv2.k8s.aws/cluster") == self.aws["cluster"]:
                    return td["ResourceArn"]
        return None

    def _stack_target_groups(self, stack: str) -> dict:
        """ingress.k8s.aws/resource -> target group, for the target groups tagged as the stack's."""
        elb, _ = self._clients()
        tgs = {tg["TargetGroupArn"]: tg for page in elb.get_paginator("describe_target_groups").paginate()
               for tg in page["TargetGroups"]}
        arns, out = list(tgs), {}
        for i in range(0, len(arns), 20):
            for td in elb.describe_tags(ResourceArns=arns[i:i + 20])["TagDescriptions"]:
                tags = {t["Key"]: t["Value"] for t in td.get("Tags", [])}
                if tags.get("ingress.k8s.aws/stack") == stack and tags.get("elbv2.k8s.aws/cluster") == self.aws["cluster"] \
                        and tags.get("ingress.k8s.aws/resource"):
                    out[tags["ingress.k8s.aws/resource"]] = tgs[td["ResourceArn"]]
        return out

    def create_alb(self, ing):
        """The stack's ALB, found by its tags or created: (ARN, DNS name, VPC); (None, synthetic hostname,
        None) without a local AWS or when the ALB cannot be made for want of subnets."""
        name = self.lb_name(ing)
        synthetic = f"{name}-{int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 10**10}.{self.aws['region']}.elb.amazonaws.com"
        if not self.aws.get("endpoint"):
            log(f"no --aws-endpoint: ingress {self.stack(ing)} gets a synthetic hostname")
            return None, synthetic, None
        elb, ec2 = self._clients()
        arn = self._find_lb(ing)
        if arn:
            lb = elb.describe_load_balancers(LoadBalancerArns=[arn])["LoadBalancers"][0]
            return arn, lb["DNSName"], lb.get("VpcId")
        ann = ing["metadata"].get("annotations") or {}
        scheme = ann.get("alb.ingress.kubernetes.io/scheme", "internal")
        subnets = [x.strip() for x in ann.get("alb.ingress.kubernetes.io/subnets", "").split(",") if x.strip()]
        if not subnets:
            roles = ["kubernetes.io/role/elb", "kubernetes.io/role/internal-elb"]
            if scheme == "internal":
                roles.reverse()
            for role in roles:
                found = ec2.describe_subnets(Filters=[{"Name": f"tag:{role}", "Values": ["1", ""]}])["Subnets"]
                per_az = {}
                for sn in sorted(found, key=lambda x: x["SubnetId"]):
                    per_az.setdefault(sn["AvailabilityZone"], sn["SubnetId"])
                if per_az:
                    subnets = list(per_az.values())
                    break
        kw = dict(Name=name, Scheme=scheme, Type="application", IpAddressType="ipv4",
                  Tags=self._tags(self.stack(ing), "LoadBalancer"))
        if subnets:
            kw["Subnets"] = subnets
        try:
            lb = elb.create_load_balancer(**kw)["LoadBalancers"][0]
        except Exception as e:  # noqa: BLE001
            if subnets:
                raise
            log(f"WARNING: no subnets tagged kubernetes.io/role/elb and the ALB could not be created without "
                f"subnets ({e}); ingress {self.stack(ing)} gets a synthetic hostname, nothing in AWS")
            return None, synthetic, None
        log(f"created ALB {name} for ingress {self.stack(ing)}: {lb['DNSName']}")
        return lb["LoadBalancerArn"], lb["DNSName"], lb.get("VpcId")

    def delete_alb(self, ing) -> None:
        """Tear the stack down as the controller does: listeners, TargetGroupBindings and target groups,
        then the ALB."""
        if not self.aws.get("endpoint"):
            return
        elb, _ = self._clients()
        stack = self.stack(ing)
        arn = self._find_lb(ing)
        if arn:
            for listener in elb.describe_listeners(LoadBalancerArn=arn)["Listeners"]:
                elb.delete_listener(ListenerArn=listener["ListenerArn"])
        for resource, tg in self._stack_target_groups(stack).items():
            self._delete_bindings(tg["TargetGroupArn"])
            elb.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])
            log(f"deleted target group {tg['TargetGroupName']} ({resource}) of ingress stack {stack}")
        if arn:
            elb.delete_load_balancer(LoadBalancerArn=arn)
            log(f"deleted ALB {arn} of ingress {stack}")

    # ------------------------------------------------------------------ TargetGroupBindings
    def _pod_webhook(self, rt, ns, pod) -> None:
        """The controller's pod mutating webhook (mpod.elbv2.k8s.aws): in a namespace labelled
        elbv2.k8s.aws/pod-readiness-gate-inject=enabled, a new Pod selected by the Service of an ip
        TargetGroupBinding there gets the readiness gate target-health.elbv2.k8s.aws/<binding>."""
        if rt.gp != ("", "pods"):
            return
        s = self.s
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get(INJECT_LABEL) == "disabled":  # the webhook's objectSelector
            return
        nso = s.find(self.rt("", "namespaces"), None, ns)
        if nso is None or (nso["metadata"].get("labels") or {}).get(INJECT_LABEL) != "enabled":
            return
        trt = self._tgb_rt()
        if trt is None or not self.alb_controller_running():
            return
        spec = pod.setdefault("spec", {})
        gates = list(spec.get("readinessGates") or [])
        for tgb in s.all_of(trt.gp):
            tmd, tspec = tgb["metadata"], tgb.get("spec") or {}
            if tmd.get("namespace") != ns or tmd.get("deletionTimestamp") or tspec.get("targetType") != "ip":
                continue
            svc = s.find(self.rt("", "services"), ns, (tspec.get("serviceRef") or {}).get("name", ""))
            sel = ((svc or {}).get("spec") or {}).get("selector") or {}
            if not sel or any(labels.get(k) != v for k, v in sel.items()):
                continue
            gate = GATE_PREFIX + tmd["name"]
            if not any(isinstance(g, dict) and g.get("conditionType") == gate for g in gates):
                gates.append({"conditionType": gate})
        if gates:
            spec["readinessGates"] = gates

    def target_group_bindings(self) -> None:
        """The controller's TargetGroupBinding reconciler (ip targets): registers the Service port's endpoints
        that are ready -- or whose Pod carries this binding's readiness gate and has ContainersReady -- and
        deregisters the rest, through the ELBv2 API; sets the Pods' readiness-gate conditions from
        DescribeTargetHealth (probing while some are not healthy); on deletion deregisters every target and
        removes its finalizer. AWS is asked only when the targets change, every 0.25 s while a gate waits,
        and every 60 s otherwise."""
        if not self.aws.get("endpoint"):
            return
        s = self.s
        with s.lock:
            trt = self._tgb_rt()
            if trt is None or not self.alb_controller_running():
                return
            work = []
            for tgb in s.all_of(trt.gp):
                md, spec = tgb["metadata"], tgb.get("spec") or {}
                arn = spec.get("targetGroupARN")
                if not arn:
                    continue
                if md.get("deletionTimestamp"):
                    if TGB_FINALIZER in (md.get("finalizers") or []) and \
                            self.tgb_memo.get(md["uid"], {}).get("retry", 0) <= time.monotonic():
                        work.append(("delete", copy.deepcopy(tgb), arn, None, None))
                    continue
                if TGB_FINALIZER not in (md.get("finalizers") or []):
                    new = copy.deepcopy(tgb)
                    new["metadata"]["finalizers"] = list(md.get("finalizers") or []) + [TGB_FINALIZER]
                    s.update(trt, md["namespace"], md["name"], new, "controller")
                if (spec.get("targetType") or "ip") != "ip":
                    continue
                desired, gated = self._binding_targets(tgb)
                memo = self.tgb_memo.get(md["uid"])
                now = time.monotonic()
                if memo is not None and memo.get("retry", 0) > now:
                    continue
                pending = any(ip in {t[0] for t in desired} and status != "True" for _n, _u, ip, status in gated)
                if memo is None or memo["desired"] != desired or memo["arn"] != arn \
                        or (pending and now - memo["at"] >= 0.25) or now - memo["at"] >= 60:
                    work.append(("sync", copy.deepcopy(tgb), arn, desired, gated))
            live = {t["metadata"]["uid"] for t in s.all_of(trt.gp)}
        for uid in set(self.tgb_memo) - live:
            self.tgb_memo.pop(uid, None)
        elb = self._clients()[0] if work else None
        for op, tgb, arn, desired, gated in work:
            md = tgb["metadata"]
            where = f"TargetGroupBinding {md['namespace']}/{md['name']}"
            try:
                if op == "delete":
                    try:
                        regd = [d["Target"] for d in elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
                                if d["TargetHealth"]["State"] != "draining"]
                        for i in range(0, len(regd), 50):
                            elb.deregister_targets(TargetGroupArn=arn, Targets=regd[i:i + 50])
                    except Exception as e:  # noqa: BLE001
                        if "TargetGroupNotFound" not in str(e):
                            raise
                    with s.lock:
                        cur = s.find(self._tgb_rt(), md["namespace"], md["name"])
                        if cur is not None and cur["metadata"]["uid"] == md["uid"]:
                            s.remove_finalizer(self._tgb_rt(), cur, TGB_FINALIZER, "controller")
                    self.tgb_memo.pop(md["uid"], None)
                    continue
                health = self._target_health(elb, arn)
                registered = {k for k, h in health.items() if h["State"] != "draining"}
                add, remove = sorted(desired - registered), sorted(registered - desired)
                for i in range(0, len(add), 50):
                    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": ip, "Port": port} for ip, port in add[i:i + 50]])
                for i in range(0, len(remove), 50):
                    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": ip, "Port": port} for ip, port in remove[i:i + 50]])
                if add or remove:
                    log(f"{where}: registered {[ip for ip, _p in add]}, deregistered {[ip for ip, _p in remove]}")
                    health = self._target_health(elb, arn)
                self.tgb_memo[md["uid"]] = {"desired": desired, "arn": arn, "at": time.monotonic()}
                self._set_gates(md["namespace"], GATE_PREFIX + md["name"], desired, gated, health)
                with s.lock:
                    trt = self._tgb_rt()
                    cur = s.find(trt, md["namespace"], md["name"]) if trt is not None else None
                    gen = (cur or {}).get("metadata", {}).get("generation", 1)
                    if cur is not None and cur["metadata"]["uid"] == md["uid"] and trt.status_sub and \
                            (cur.get("status") or {}).get("observedGeneration") != gen:
                        new = copy.deepcopy(cur)
                        new["status"] = dict(cur.get("status") or {}, observedGeneration=gen)
                        s.update(trt, md["namespace"], md["name"], new, "controller", "status")
            except Exception as e:  # noqa: BLE001
                log(f"{where}: {op} failed: {e}; retrying in 1 s")
                self.tgb_memo[md["uid"]] = {"desired": None, "arn": arn, "at": 0.0, "retry": time.monotonic() + 1.0}

    @staticmethod
    def _target_health(elb, arn: str) -> dict:
        return {(d["Target"]["Id"], d["Target"].get("Port")): d["TargetHealth"]
                for d in elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]}

    def _binding_targets(self, tgb: dict):
        """(desired targets {(ip, port)}, Pods with this binding's gate [(name, uid, ip, gate status)])."""
        s = self.s
        md, spec = tgb["metadata"], tgb.get("spec") or {}
        ns = md["namespace"]
        gate = GATE_PREFIX + md["name"]
        prt = self.rt("", "pods")
        pods = {p["metadata"]["uid"]: p for p in s.all_of(prt.gp) if p["metadata"].get("namespace") == ns}
        gated = []
        for p in pods.values():
            if any(isinstance(g, dict) and g.get("conditionType") == gate for g in (p.get("spec") or {}).get("readinessGates") or []):
                ips = _pod_ips(p)
                cond = next((c for c in (p.get("status") or {}).get("conditions") or [] if c.get("type") == gate), {})
                gated.append((p["metadata"]["name"], p["metadata"]["uid"], ips[0] if ips else None, cond.get("status")))
        ref = spec.get("serviceRef") or {}
        svc = s.find(self.rt("", "services"), ns, ref.get("name", ""))
        sp = _service_port(svc, ref.get("port")) if svc is not None else None
        desired = set()
        if sp is None:
            return frozenset(), gated
        for sl in self._slices(ns, svc["metadata"]["name"]):
            port = next((p.get("port") for p in sl.get("ports") or [] if p.get("name", "") == sp.get("name", "")), None)
            if not port:
                continue
            for ep in sl.get("endpoints") or []:
                c = ep.get("conditions") or {}
                if c.get("terminating") or not ep.get("addresses"):
                    continue
                pod = pods.get((ep.get("targetRef") or {}).get("uid"))
                has_gate = pod is not None and any(
                    isinstance(g, dict) and g.get("conditionType") == gate for g in (pod.get("spec") or {}).get("readinessGates") or [])
                if c.get("ready") or (has_gate and _pod_condition(pod, "ContainersReady")):
                    desired.add((ep["addresses"][0], port))
        return frozenset(desired), gated

    def _set_gates(self, ns: str, gate: str, desired, gated, health: dict) -> None:
        """target-health.elbv2.k8s.aws/<binding> on the gated Pods that are targets: True once healthy, False
        with the target's reason and description otherwise (Unknown while not yet registered)."""
        s = self.s
        prt = self.rt("", "pods")
        by_ip = {ip: h for (ip, port), h in health.items() if (ip, port) in desired}
        targets = {ip for ip, _p in desired}
        with s.lock:
            for pname, puid, ip, _status in gated:
                if ip is None or ip not in targets:
                    continue
                pod = s.find(prt, ns, pname)
                if pod is None or pod["metadata"]["uid"] != puid:
                    continue
                h = by_ip.get(ip)
                status = "Unknown" if h is None else ("True" if h.get("State") == "healthy" else "False")
                cond = {"type": gate, "status": status, "lastProbeTime": None}
                if h is not None and h.get("Reason"):
                    cond["reason"] = h["Reason"]
                if h is not None and h.get("Description"):
                    cond["message"] = h["Description"]
                old = pod.get("status") or {}
                prev = next((c for c in old.get("conditions") or [] if c.get("type") == gate), None)
                if prev is not None and all(prev.get(k) == cond.get(k) for k in ("status", "reason", "message")):
                    continue
                cond["lastTransitionTime"] = prev.get("lastTransitionTime") if prev and prev.get("status") == status else now_ts()
                new = copy.deepcopy(pod)
                new.setdefault("status", {})["conditions"] = [c for c in old.get("conditions") or []
                                                              if c.get("type") != gate] + [cond]
                s.update(prt, ns, pname, new, "controller", "status")


def _backends(ing: dict) -> list:
    """The distinct (service, port) backends of an Ingress: defaultBackend first, then its rules' paths;
    port as the Ingress names it (number, or name)."""
    spec = ing.get("spec") or {}
    out = []
    refs = [((spec.get("defaultBackend") or {}).get("service"))]
    for rule in spec.get("rules") or []:
        for path in ((rule or {}).get("http") or {}).get("paths") or []:
            refs.append(((path or {}).get("backend") or {}).get("service"))
    for ref in refs:
        if isinstance(ref, dict) and ref.get("name"):
            b = (ref["name"], _port_of(ref))
            if b not in out:
                out.append(b)
    return out


def _port_of(ref: dict):
    port = ref.get("port") or {}
    return port.get("number") if port.get("number") is not None else port.get("name", "")


def _service_port(svc, port):
    """The Service port a backend or serviceRef names (by number, or by name)."""
    for sp in ((svc or {}).get("spec") or {}).get("ports") or []:
        if (isinstance(port, int) and sp.get("port") == port) or (isinstance(port, str) and sp.get("name") == port):
            return sp
    return None


def _alnum(s: str) -> str:
    return "".join(c for c in s if c.isalnum())


def _action_key(a: dict) -> tuple:
    if a.get("Type") == "forward":
        return ("forward", a.get("TargetGroupArn") or
                (((a.get("ForwardConfig") or {}).get("TargetGroups") or [{}])[0]).get("TargetGroupArn"))
    return (a.get("Type"), str((a.get("FixedResponseConfig") or {}).get("StatusCode")))


def _tgb_stack(tgb: dict):
    labels = tgb["metadata"].get("labels") or {}
    if labels.get("ingress.k8s.aws/stack"):
        return labels["ingress.k8s.aws/stack"]
    if labels.get("ingress.k8s.aws/stack-name"):
        return f"{labels.get('ingress.k8s.aws/stack-namespace', '')}/{labels['ingress.k8s.aws/stack-name']}"
    return None


def _pod_condition(p: dict, typ: str) -> bool:
    return any(c.get("type") == typ and c.get("status") == "True"
               for c in (p.get("status") or {}).get("conditions") or [])


POD_CONDITIONS = ("PodScheduled", "Initialized", "ContainersReady", "Ready", "PodReadyToStartContainers")


def _matches(value, patterns) -> bool:
    """`value` (an image or a namespace) is one of `patterns`, or matches one that has `*` wildcards
    (`registry/app:*`, `*@sha256:...`)."""
    for pat in patterns or []:
        if pat == value or (isinstance(pat, str) and "*" in pat and fnmatch.fnmatchcase(str(value), pat)):
            return True
    return False


def _node_name(n: int) -> str:
    return f"fargate-ip-10-0-1-{n + 10}.ap-south-1.compute.internal"


def _ts(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _go_duration(sec: float) -> str:
    m, s = divmod(int(sec), 60)
    return f"{m}m{s}s" if m else f"{s}s"


def _crash_loop(t: float, scale: float):
    """A container that exits at once, `t` seconds after its first crash, restarted with the kubelet's
    back-off (10 s, doubling, at most 5 min; × scale): (restarts since, seconds from the first to the
    latest crash, current back-off in unscaled seconds)."""
    scale = max(scale, 1e-3)
    k, since, backoff = 0, 0.0, 10.0
    while since + backoff * scale <= t:
        if backoff >= 300:
            n = int((t - since) / (300 * scale))
            return k + n, since + n * 300 * scale, 300.0
        since += backoff * scale
        k += 1
        backoff = min(backoff * 2, 300.0)
    return k, since, backoff


def _pod_cond(old: dict, typ: str, status: str, reason=None, message=None) -> dict:
    """A Pod condition; its lastTransitionTime kept while its status does not change."""
    prev = next((c for c in old.get("conditions") or [] if c.get("type") == typ), None)
    t = prev.get("lastTransitionTime") if prev and prev.get("status") == status else None
    c = {"type": typ, "status": status, "lastProbeTime": None, "lastTransitionTime": t or now_ts()}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def _revision(rs: dict) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", 0))
    except ValueError:
        return 0


def _max_unavailable(spec: dict, want: int) -> int:
    """deploymentutil.MaxUnavailable: rollingUpdate.maxUnavailable (25%, rounded down; 1 if it and maxSurge
    are both 0), at most `want`; 0 for Recreate."""
    st = spec.get("strategy") or {}
    if st.get("type") == "Recreate" or want == 0:
        return 0
    ru = st.get("rollingUpdate") or {}

    def resolve(v, up):
        if isinstance(v, str) and v.endswith("%"):
            try:
                f = want * int(v[:-1]) / 100
            except ValueError:
                return 0
            return int(-(-f // 1)) if up else int(f)
        try:
            return int(v)
        except (TypeError, ValueError):
            return 0

    mu, ms = resolve(ru.get("maxUnavailable", "25%"), False), resolve(ru.get("maxSurge", "25%"), True)
    if mu == 0 and ms == 0:
        mu = 1
    return min(mu, want)


def _service_ip_set(spec: dict) -> bool:
    return spec.get("clusterIP") not in (None, "", "None")


def _pod_ready(p: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (p.get("status") or {}).get("conditions") or [])


def _pod_ips(p: dict) -> list:
    st = p.get("status") or {}
    ips = [x.get("ip") for x in st.get("podIPs") or [] if isinstance(x, dict) and x.get("ip")]
    return ips or ([st["podIP"]] if st.get("podIP") else [])


def _in_endpoints(p: dict, include_terminating: bool) -> bool:
    """endpointslice util ShouldPodBeInEndpoints: not terminal, has an IP, not terminating unless asked."""
    if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    if not _pod_ips(p):
        return False
    return include_terminating or not p["metadata"].get("deletionTimestamp")


def _find_port(pod: dict, sp: dict):
    """podutil.FindPort: an int targetPort as it is; a named one is the containerPort of that name and the
    service port's protocol in the pod's containers (or sidecar init containers); None if there is none."""
    tp = sp.get("targetPort", sp.get("port"))
    if isinstance(tp, int) and not isinstance(tp, bool):
        return tp
    if not isinstance(tp, str):
        return None
    proto = sp.get("protocol", "TCP")
    pspec = pod.get("spec") or {}
    containers = list(pspec.get("containers") or []) + [
        c for c in pspec.get("initContainers") or [] if isinstance(c, dict) and c.get("restartPolicy") == "Always"]
    for c in containers:
        for cp in (c.get("ports") or []) if isinstance(c, dict) else []:
            if isinstance(cp, dict) and cp.get("name") == tp and cp.get("protocol", "TCP") == proto:
                return cp.get("containerPort")
    return None


def _ports_key(ports: list) -> str:
    return json.dumps(sorted(json.dumps(p, sort_keys=True) for p in ports))


def _repack(entries) -> list:
    """endpoints.RepackSubsets: (address, ready, port or None) -> subsets, one per set of addresses, each with
    every port those addresses serve; addresses sorted by IP then UID."""
    by_port: dict[str, tuple] = {}
    for addr, ready, port in entries:
        k = json.dumps(port, sort_keys=True)
        by_port.setdefault(k, (port, {}))[1][(addr["ip"], addr["targetRef"]["uid"])] = (addr, ready)
    groups: dict[tuple, tuple] = {}
    for port, addrs in by_port.values():
        g = groups.setdefault(tuple(sorted((a, r) for a, (_x, r) in addrs.items())), (addrs, []))
        if port is not None:
            g[1].append(port)
    subsets = []
    for addrs, ports in groups.values():
        ss = {}
        ordered = [addrs[k] for k in sorted(addrs)]
        ready = [a for a, r in ordered if r]
        not_ready = [a for a, r in ordered if not r]
        if ready:
            ss["addresses"] = ready
        if not_ready:
            ss["notReadyAddresses"] = not_ready
        if ports:
            ss["ports"] = ports
        subsets.append(ss)
    subsets.sort(key=lambda x: json.dumps(x, sort_keys=True))
    return subsets


def _strip_times(st):
    if isinstance(st, dict):
        return {k: _strip_times(v) for k, v in st.items()
                if k not in ("lastUpdateTime", "lastTransitionTime", "startTime", "startedAt", "lastProbeTime")}
    if isinstance(st, list):
        return [_strip_times(v) for v in st]
    return st
