"""Background controllers: CRD establishment, namespaces, garbage collection, Deployments, Endpoints and
EndpointSlices, the ALB ingress controller."""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import threading
import time

from .store import ApiError, Store, _rand, now_ts

ALB_FINALIZER = "ingress.k8s.aws/resources"
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
        self.seen_gen: dict[tuple, float] = {}   # (uid, generation) -> first seen
        self.ing_seen: dict[str, float] = {}
        self.ing_retry: dict[str, float] = {}
        self.ns_done: set = set()
        self.ns_terminating: dict[str, float] = {}
        self.ep_services: dict[tuple, str] = {}  # (namespace, name) -> uid of the Services seen last pass
        self._elb = None
        self._ec2 = None

    def start(self) -> None:
        threading.Thread(target=self.run, name="controllers", daemon=True).start()

    def run(self) -> None:
        while not self.stop.is_set():
            for step in (self.crds, self.namespaces, self.gc, self.deployments, self.endpoints, self.ingresses):
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
        s = self.s
        drt, rsrt, prt = self.rt("apps", "deployments"), self.rt("apps", "replicasets"), self.rt("", "pods")
        delay = float(self.config.get("deployment_delay", 1.0))
        scale = float(self.config.get("time_scale", 1.0))
        bad_images = set(self.config.get("unpullable_images") or [])
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
                t0 = self.seen_gen.setdefault((uid, gen), now)
                elapsed = now - t0
                images = [c.get("image") for c in (tpl.get("spec") or {}).get("containers") or []]
                bad = any(i in bad_images for i in images)
                done = want == 0 or (not bad and elapsed >= delay)
                deadline = float(spec.get("progressDeadlineSeconds", 600)) * scale
                failed = bad and elapsed >= max(deadline, delay)
                owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid,
                         "controller": True, "blockOwnerDeletion": True}
                # ReplicaSets
                rs = s.find(rsrt, ns, rs_name)
                rs_tpl = copy.deepcopy(tpl)
                rs_tpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = phash
                sel = copy.deepcopy(spec.get("selector") or {})
                sel.setdefault("matchLabels", {})["pod-template-hash"] = phash
                if rs is None:
                    rs = s._create_internal(rsrt, ns, {
                        "metadata": {"name": rs_name, "labels": dict(rs_tpl["metadata"]["labels"]),
                                     "annotations": {"deployment.kubernetes.io/revision": str(gen)},
                                     "ownerReferences": [owner]},
                        "spec": {"replicas": want, "selector": sel, "template": rs_tpl}}, KCM)
                elif (rs.get("spec") or {}).get("replicas") != want:
                    new = copy.deepcopy(rs)
                    new["spec"]["replicas"] = want
                    rs = s.update(rsrt, ns, rs_name, new, KCM)
                for other in list(s.all_of(rsrt.gp)):
                    omd = other["metadata"]
                    if omd.get("namespace") != ns or omd["name"] == rs_name:
                        continue
                    if not any(r.get("uid") == uid for r in omd.get("ownerReferences") or []):
                        continue
                    if (other.get("spec") or {}).get("replicas", 0) != 0 and (done or failed is False and not bad and elapsed >= delay):
                        new = copy.deepcopy(other)
                        new["spec"]["replicas"] = 0
                        s.update(rsrt, ns, omd["name"], new, KCM)
                    if (other.get("spec") or {}).get("replicas", 0) == 0 or done:
                        self._sync_pods(ns, other, 0, False, False)
                # pods of the new ReplicaSet
                self._sync_pods(ns, rs, want, done, bad, elapsed)
                # status
                rs_ready = want if done else 0
                cur_st = d.get("status") or {}
                prev_avail = cur_st.get("availableReplicas", 0) if cur_st.get("observedGeneration", 0) < gen or not done else 0
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

                if done:
                    avail = want
                    st = {"observedGeneration": gen, "replicas": want, "updatedReplicas": want,
                          "readyReplicas": want, "availableReplicas": want}
                    cl = [cond("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."),
                          cond("Progressing", "True", "NewReplicaSetAvailable",
                               f'ReplicaSet "{rs_name}" has successfully progressed.')]
                else:
                    avail = min(prev_avail, want)
                    st = {"observedGeneration": gen, "replicas": want, "updatedReplicas": want}
                    if avail:
                        st["readyReplicas"] = avail
                        st["availableReplicas"] = avail
                    st["unavailableReplicas"] = want - avail if want > avail else want
                    max_unavail = want - int(want * 0.25)
                    av = avail >= max_unavail and avail > 0
                    cl = [cond("Available", "True" if av else "False",
                               "MinimumReplicasAvailable" if av else "MinimumReplicasUnavailable",
                               "Deployment has minimum availability." if av else "Deployment does not have minimum availability.")]
                    if failed:
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
                rs = s.find(rsrt, ns, rs_name)
                if rs is not None:
                    rst = {"replicas": want, "fullyLabeledReplicas": want, "observedGeneration": rs["metadata"].get("generation", 1)}
                    if rs_ready:
                        rst.update(readyReplicas=rs_ready, availableReplicas=rs_ready)
                    if rst != {k: v for k, v in (rs.get("status") or {}).items()}:
                        new = copy.deepcopy(rs)
                        new["status"] = rst
                        s.update(rsrt, ns, rs_name, new, KCM, "status")

    def _sync_pods(self, ns, rs, want, ready, bad, elapsed=0.0) -> None:
        s = self.s
        prt = self.rt("", "pods")
        rs_uid = rs["metadata"]["uid"]
        pods = [p for p in s.all_of(prt.gp) if p["metadata"].get("namespace") == ns
                and any(r.get("uid") == rs_uid for r in p["metadata"].get("ownerReferences") or [])
                and not p["metadata"].get("deletionTimestamp")]
        for p in pods[want:]:
            s.delete(prt, ns, p["metadata"]["name"], {})
        tpl = (rs.get("spec") or {}).get("template") or {}
        for _ in range(want - len(pods)):
            pspec = copy.deepcopy(tpl.get("spec") or {})
            pspec.setdefault("nodeName", "fargate-ip-10-0-1-" + str(len(pods) + 10) + ".ap-south-1.compute.internal")
            s._create_internal(prt, ns, {
                "metadata": {"name": f"{rs['metadata']['name']}-{_rand(5)}",
                             "labels": dict((tpl.get("metadata") or {}).get("labels") or {}),
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                  "name": rs["metadata"]["name"], "uid": rs_uid,
                                                  "controller": True, "blockOwnerDeletion": True}]},
                "spec": pspec, "status": {"phase": "Pending", "qosClass": "BestEffort"}}, KCM)
        pods = [p for p in s.all_of(prt.gp) if p["metadata"].get("namespace") == ns
                and any(r.get("uid") == rs_uid for r in p["metadata"].get("ownerReferences") or [])
                and not p["metadata"].get("deletionTimestamp")]
        for p in pods:
            ip = (p.get("status") or {}).get("podIP") or s.alloc_pod_ip()
            st = self._pod_status(p, ready, bad, elapsed, ip)
            if _strip_times(st) != _strip_times(p.get("status") or {}):
                new = copy.deepcopy(p)
                old_st = p.get("status") or {}
                st.setdefault("startTime", old_st.get("startTime", now_ts()))
                new["status"] = st
                s.update(prt, ns, p["metadata"]["name"], new, "kubelet", "status")

    @staticmethod
    def _pod_status(p, ready, bad, elapsed, ip) -> dict:
        ts = now_ts()
        containers = (p.get("spec") or {}).get("containers") or []
        bad_images = set()
        cs = []
        for c in containers:
            entry = {"name": c.get("name"), "image": c.get("image"), "imageID": "", "restartCount": 0,
                     "ready": bool(ready), "started": bool(ready)}
            if ready:
                entry["state"] = {"running": {"startedAt": ts}}
                entry["imageID"] = "docker.io/" + str(c.get("image"))
            elif bad:
                reason = "ErrImagePull" if elapsed < 0.5 else "ImagePullBackOff"
                msg = (f'Back-off pulling image "{c.get("image")}"' if reason == "ImagePullBackOff" else
                       f'failed to pull and unpack image "{c.get("image")}": not found')
                entry["state"] = {"waiting": {"reason": reason, "message": msg}}
            else:
                entry["state"] = {"waiting": {"reason": "ContainerCreating"}}
            cs.append(entry)
        _ = bad_images
        st = {"phase": "Running" if ready else "Pending", "qosClass": "BestEffort", "containerStatuses": cs,
              "hostIP": "10.0.1.10", "hostIPs": [{"ip": "10.0.1.10"}], "podIP": ip, "podIPs": [{"ip": ip}],
              "conditions": [
                  {"type": "PodScheduled", "status": "True", "lastTransitionTime": ts, "lastProbeTime": None},
                  {"type": "Initialized", "status": "True", "lastTransitionTime": ts, "lastProbeTime": None},
                  {"type": "ContainersReady", "status": "True" if ready else "False", "lastTransitionTime": ts,
                   "lastProbeTime": None, **({} if ready else {"reason": "ContainersNotReady"})},
                  {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": ts,
                   "lastProbeTime": None, **({} if ready else {"reason": "ContainersNotReady"})},
              ]}
        return st

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
        s = self.s
        irt = self.rt("networking.k8s.io", "ingresses")
        with s.lock:
            if not self.alb_controller_running():
                return
        delay = float(self.config.get("ingress_delay", 1.0))
        now = time.monotonic()
        work = []
        with s.lock:
            for ing in s.all_of(irt.gp):
                if not self.is_alb(ing):
                    continue
                md = ing["metadata"]
                uid = md["uid"]
                if self.ing_retry.get(uid, 0) > now:
                    continue
                if md.get("deletionTimestamp"):
                    if ALB_FINALIZER in (md.get("finalizers") or []):
                        # an IngressGroup's ALB stays while another member of the group lives
                        shared = any(o is not ing and self.is_alb(o) and not o["metadata"].get("deletionTimestamp")
                                     and self.stack(o) == self.stack(ing) for o in s.all_of(irt.gp))
                        work.append(("release" if shared else "delete", copy.deepcopy(ing)))
                    continue
                t0 = self.ing_seen.setdefault(uid, now)
                if now - t0 < delay:
                    continue
                if ALB_FINALIZER not in (md.get("finalizers") or []):
                    new = copy.deepcopy(ing)
                    new["metadata"]["finalizers"] = list(md.get("finalizers") or []) + [ALB_FINALIZER]
                    s.update(irt, md["namespace"], md["name"], new, "ingress")
                    continue
                lbs = ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
                if not lbs:
                    work.append(("create", copy.deepcopy(ing)))
        for op, ing in work:
            md = ing["metadata"]
            try:
                if op == "create":
                    host = self.create_alb(ing)
                    with s.lock:
                        cur = s.find(irt, md["namespace"], md["name"])
                        if cur is None or cur["metadata"]["uid"] != md["uid"]:
                            continue
                        new = copy.deepcopy(cur)
                        new["status"] = {"loadBalancer": {"ingress": [{"hostname": host}]}}
                        s.update(irt, md["namespace"], md["name"], new, "controller", "status")
                else:
                    if op == "delete":
                        self.delete_alb(ing)
                    with s.lock:
                        cur = s.find(irt, md["namespace"], md["name"])
                        if cur is not None and cur["metadata"]["uid"] == md["uid"]:
                            s.remove_finalizer(irt, cur, ALB_FINALIZER, "ingress")
                    self.ing_seen.pop(md["uid"], None)
            except Exception as e:  # noqa: BLE001
                log(f"ingress {md['namespace']}/{md['name']}: {op} failed: {e}; retrying in 1 s")
                self.ing_retry[md["uid"]] = time.monotonic() + 1.0

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

    def create_alb(self, ing) -> str:
        name = self.lb_name(ing)
        synthetic = f"{name}-{int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 10**10}.{self.aws['region']}.elb.amazonaws.com"
        if not self.aws.get("endpoint"):
            log(f"no --aws-endpoint: ingress {self.stack(ing)} gets a synthetic hostname")
            return synthetic
        elb, ec2 = self._clients()
        arn = self._find_lb(ing)
        if arn:
            return elb.describe_load_balancers(LoadBalancerArns=[arn])["LoadBalancers"][0]["DNSName"]
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
        tags = [{"Key": "elbv2.k8s.aws/cluster", "Value": self.aws["cluster"]},
                {"Key": "ingress.k8s.aws/stack", "Value": self.stack(ing)},
                {"Key": "ingress.k8s.aws/resource", "Value": "LoadBalancer"}]
        kw = dict(Name=name, Scheme=scheme, Type="application", IpAddressType="ipv4", Tags=tags)
        if subnets:
            kw["Subnets"] = subnets
        try:
            lb = elb.create_load_balancer(**kw)["LoadBalancers"][0]
        except Exception as e:  # noqa: BLE001
            if subnets:
                raise
            log(f"WARNING: no subnets tagged kubernetes.io/role/elb and the ALB could not be created without "
                f"subnets ({e}); ingress {self.stack(ing)} gets a synthetic hostname, nothing in AWS")
            return synthetic
        log(f"created ALB {name} for ingress {self.stack(ing)}: {lb['DNSName']}")
        return lb["DNSName"]

    def delete_alb(self, ing) -> None:
        if not self.aws.get("endpoint"):
            return
        elb, _ = self._clients()
        arn = self._find_lb(ing)
        if arn:
            elb.delete_load_balancer(LoadBalancerArn=arn)
            log(f"deleted ALB {arn} of ingress {self.stack(ing)}")


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
