#!/usr/bin/env python3
"""Policy check of rendered Kubernetes manifests (the output of `kustomize build`).

Rules (each violation is printed; exit 1 when there is any):
  - every Deployment/StatefulSet container has startup, liveness and readiness
    probes and CPU+memory requests and limits;
  - every Deployment takes its config from a ConfigMap (envFrom configMapRef)
    that exists in the render; BearBnB containers probe /healthz (liveness,
    startup) and /readyz (readiness), have a preStop hook, and a grace period
    that covers preStop + the drain time;
  - every HorizontalPodAutoscaler is autoscaling/v2, targets an existing
    Deployment, scales on CPU (the target has CPU requests), has min <= max and
    a scale-down stabilization window; that Deployment leaves replicas to it;
  - every referenced ConfigMap, Secret (and key) and PVC exists; every Service
    selects a pod template and its named targetPorts exist there;
  - every StatefulSet has volumeClaimTemplates.
"""
import sys

import yaml

DRAIN_SECONDS = 15  # SIGTERM -> exit budget of the host (see deploy/README.md)


def load(paths):
    objs = []
    for p in paths:
        with open(p) as f:
            objs += [d for d in yaml.safe_load_all(f) if d]
    return objs


def ns(o):
    return o.get("metadata", {}).get("namespace", "default")


def key(o):
    return (o.get("kind"), ns(o), o["metadata"]["name"])


def check(objs):
    errs = []
    by = {key(o): o for o in objs}

    def exists(kind, namespace, name):
        return (kind, namespace, name) in by

    workloads = [o for o in objs if o.get("kind") in ("Deployment", "StatefulSet")]
    hpa_targets = set()
    for h in (o for o in objs if o.get("kind") == "HorizontalPodAutoscaler"):
        where = "HorizontalPodAutoscaler/%s" % h["metadata"]["name"]
        spec = h.get("spec", {})
        ref = spec.get("scaleTargetRef", {})
        if h.get("apiVersion") != "autoscaling/v2":
            errs.append("%s: apiVersion %s, want autoscaling/v2" % (where, h.get("apiVersion")))
        if ref.get("kind") != "Deployment" or not exists("Deployment", ns(h), ref.get("name")):
            errs.append("%s: targets %s/%s, no such Deployment" % (where, ref.get("kind"), ref.get("name")))
        else:
            hpa_targets.add((ns(h), ref["name"]))
            d = by[("Deployment", ns(h), ref["name"])]
            if "replicas" in d["spec"]:
                errs.append("%s: target Deployment sets replicas (the HPA owns it)" % where)
            for c in d["spec"]["template"]["spec"]["containers"]:
                if not c.get("resources", {}).get("requests", {}).get("cpu"):
                    errs.append("%s: target container %s has no CPU request" % (where, c["name"]))
        lo, hi = spec.get("minReplicas", 1), spec.get("maxReplicas", 0)
        if not 1 <= lo <= hi:
            errs.append("%s: minReplicas %s / maxReplicas %s" % (where, lo, hi))
        cpu = [m for m in spec.get("metrics", []) if m.get("type") == "Resource"
               and m["resource"].get("name") == "cpu"
               and m["resource"].get("target", {}).get("type") == "Utilization"]
        if not cpu:
            errs.append("%s: no CPU utilization target" % where)
        if spec.get("behavior", {}).get("scaleDown", {}).get("stabilizationWindowSeconds") is None:
            errs.append("%s: no scale-down stabilization window" % where)

    for w in workloads:
        kind, name, wns = w["kind"], w["metadata"]["name"], ns(w)
        where = "%s/%s" % (kind, name)
        pod = w["spec"]["template"]["spec"]
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        if kind == "StatefulSet" and not claims:
            errs.append("%s: no volumeClaimTemplates" % where)
        for v in pod.get("volumes", []):
            if "configMap" in v and not exists("ConfigMap", wns, v["configMap"]["name"]):
                errs.append("%s: volume %s: no ConfigMap %s" % (where, v["name"], v["configMap"]["name"]))
            if "secret" in v and not exists("Secret", wns, v["secret"]["secretName"]):
                errs.append("%s: volume %s: no Secret %s" % (where, v["name"], v["secret"]["secretName"]))
            pvc = v.get("persistentVolumeClaim")
            if pvc and not exists("PersistentVolumeClaim", wns, pvc["claimName"]):
                errs.append("%s: volume %s: no PVC %s" % (where, v["name"], pvc["claimName"]))
        vol_names = {v["name"] for v in pod.get("volumes", [])} | claims
        for c in pod["containers"]:
            cw = "%s container %s" % (where, c["name"])
            for p in ("startupProbe", "livenessProbe", "readinessProbe"):
                if p not in c:
                    errs.append("%s: no %s" % (cw, p))
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if not res.get(part, {}).get(r):
                        errs.append("%s: no %s.%s" % (cw, part, r))
            for m in c.get("volumeMounts", []):
                if m["name"] not in vol_names:
                    errs.append("%s: mount %s has no volume" % (cw, m["name"]))
            cms = [e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e]
            for e in c.get("envFrom", []):
                if "configMapRef" in e and not exists("ConfigMap", wns, e["configMapRef"]["name"]):
                    errs.append("%s: envFrom: no ConfigMap %s" % (cw, e["configMapRef"]["name"]))
                if "secretRef" in e and not exists("Secret", wns, e["secretRef"]["name"]):
                    errs.append("%s: envFrom: no Secret %s" % (cw, e["secretRef"]["name"]))
            for e in c.get("env", []):
                vf = e.get("valueFrom", {})
                for kref, kkind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                    if kref in vf:
                        ref = vf[kref]
                        o = by.get((kkind, wns, ref["name"]))
                        if o is None:
                            errs.append("%s: env %s: no %s %s" % (cw, e["name"], kkind, ref["name"]))
                        elif ref["key"] not in (o.get("data") or {}) and ref["key"] not in (o.get("stringData") or {}):
                            errs.append("%s: env %s: %s %s has no key %s" % (cw, e["name"], kkind, ref["name"], ref["key"]))
            if kind != "Deployment":
                continue
            if not cms:
                errs.append("%s: takes no config from a ConfigMap (envFrom configMapRef)" % cw)
            if c["name"] == "bearbnb":
                def path(p):
                    return c.get(p, {}).get("httpGet", {}).get("path")
                if path("livenessProbe") != "/healthz" or path("startupProbe") != "/healthz":
                    errs.append("%s: liveness/startup probes must GET /healthz" % cw)
                if path("readinessProbe") != "/readyz":
                    errs.append("%s: readiness probe must GET /readyz" % cw)
                pre = c.get("lifecycle", {}).get("preStop")
                if not pre:
                    errs.append("%s: no preStop hook" % cw)
                pre_s = (pre or {}).get("sleep", {}).get("seconds", 0)
                grace = pod.get("terminationGracePeriodSeconds", 30)
                if grace < pre_s + DRAIN_SECONDS:
                    errs.append("%s: terminationGracePeriodSeconds %s < preStop %s + drain %s"
                                % (cw, grace, pre_s, DRAIN_SECONDS))

    templates = [(ns(w), w["spec"]["template"]) for w in workloads]
    for s in (o for o in objs if o.get("kind") == "Service"):
        sel = s.get("spec", {}).get("selector") or {}
        where = "Service/%s" % s["metadata"]["name"]
        if not sel:
            errs.append("%s: no selector" % where)
            continue
        match = [t for tns, t in templates if tns == ns(s)
                 and all(t["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
        if not match:
            errs.append("%s: selector %s matches no pod template" % (where, sel))
        for p in s["spec"].get("ports", []):
            tp = p.get("targetPort")
            if isinstance(tp, str) and match and not any(
                    tp == cp.get("name") for t in match for c in t["spec"]["containers"]
                    for cp in c.get("ports", [])):
                errs.append("%s: targetPort %s is no container port name" % (where, tp))
    return errs, len(workloads), hpa_targets


def host_env_names(config_c):
    """BEARBNB_* names of the host's declared keys (host/core/config.c host_keys)."""
    import re
    text = open(config_c).read()
    table = text[text.index("host_keys[] = {"):]
    table = table[:table.index("};")]
    keys = re.findall(r'\{"([a-z0-9_.\-]+)", BNB_CFG_', table)
    return {"BEARBNB_" + re.sub(r"[.\-]", "_", k).upper() for k in keys}


def check_env_keys(objs, known, plugins=("ROOM", "RESERVATION", "PAYMENT", "DASHBOARD")):
    """The host refuses unknown BEARBNB_* variables: every one a ConfigMap, a
    Secret's envFrom or a container env sets must be a host key or a plugin's."""
    errs = []
    def bad(name):
        return (name.startswith("BEARBNB_") and name not in known
                and not any(name.startswith("BEARBNB_%s_" % p) for p in plugins))
    for o in objs:
        if o.get("kind") == "ConfigMap":
            for k in (o.get("data") or {}):
                if bad(k):
                    errs.append("ConfigMap/%s: %s is no host setting" % (o["metadata"]["name"], k))
        if o.get("kind") in ("Deployment", "StatefulSet"):
            for c in o["spec"]["template"]["spec"]["containers"]:
                for e in c.get("env", []):
                    if bad(e["name"]):
                        errs.append("%s/%s: env %s is no host setting" % (o["kind"], o["metadata"]["name"], e["name"]))
    return errs


def check_config(objs, program, plugin_dir):
    """Run `bearbnb --check-config` with each BearBnB Deployment's environment
    (ConfigMaps, Secrets, mounted secret files materialized in a temp dir)."""
    import base64, os, subprocess, tempfile
    errs = []
    by = {key(o): o for o in objs}
    for d in (o for o in objs if o.get("kind") == "Deployment"):
        pod = d["spec"]["template"]["spec"]
        for c in (c for c in pod["containers"] if c["name"] == "bearbnb"):
            with tempfile.TemporaryDirectory() as tmp:
                env = {}
                def data_of(kind, name):
                    o = by.get((kind, ns(d), name)) or {}
                    if kind == "Secret":
                        return {k: base64.b64decode(v).decode() for k, v in (o.get("data") or {}).items()}
                    return dict(o.get("data") or {})
                for e in c.get("envFrom", []):
                    if "configMapRef" in e:
                        env.update(data_of("ConfigMap", e["configMapRef"]["name"]))
                    if "secretRef" in e:
                        env.update(data_of("Secret", e["secretRef"]["name"]))
                for e in c.get("env", []):
                    if "value" in e:
                        env[e["name"]] = e["value"]
                    elif "secretKeyRef" in e.get("valueFrom", {}):
                        r = e["valueFrom"]["secretKeyRef"]
                        env[e["name"]] = data_of("Secret", r["name"]).get(r["key"], "")
                vols = {v["name"]: v for v in pod.get("volumes", [])}
                mounts = {}
                for m in c.get("volumeMounts", []):
                    v = vols.get(m["name"], {})
                    if "secret" in v:
                        local = os.path.join(tmp, m["name"])
                        os.makedirs(local)
                        for k, val in data_of("Secret", v["secret"]["secretName"]).items():
                            with open(os.path.join(local, k), "w") as f:
                                f.write(val)
                        mounts[m["mountPath"]] = local
                for k, val in list(env.items()):
                    for mp, local in mounts.items():
                        if val.startswith(mp + "/"):
                            env[k] = local + val[len(mp):]
                env["BEARBNB_DATA"] = tmp
                env["BEARBNB_PLUGIN_DIR"] = plugin_dir
                env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
                for k in ("ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS"):
                    if k in os.environ:
                        env[k] = os.environ[k]
                r = subprocess.run([program, "--check-config"], env=env, capture_output=True, text=True,
                                   timeout=60)
                if r.returncode != 0:
                    last = (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[0]
                    errs.append("Deployment/%s: bearbnb --check-config refuses its environment: %s"
                                % (d["metadata"]["name"], last))
    return errs


def main(argv):
    args = argv[1:]
    host_config = program = plugin_dir = None
    while len(args) >= 2 and args[0] in ("--host-config", "--check-config"):
        if args[0] == "--host-config":
            host_config, args = args[1], args[2:]
        else:
            program, plugin_dir, args = args[1], args[2], args[3:]
    if not args:
        print("usage: k8s_policy.py [--host-config host/core/config.c] [--check-config BEARBNB PLUGIN_DIR] RENDERED.yaml...", file=sys.stderr)
        return 2
    objs = load(args)
    errs, nwork, hpas = check(objs)
    if host_config:
        errs += check_env_keys(objs, host_env_names(host_config))
    if program:
        errs += check_config(objs, program, plugin_dir)
    for e in errs:
        print("POLICY: " + e)
    print("k8s_policy: %d objects, %d workloads, %d HPAs, %d violations"
          % (len(objs), nwork, len(hpas), len(errs)))
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
