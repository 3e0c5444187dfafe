#!/bin/sh
# Offline Kubernetes checks: each overlay renders with kustomize, every object
# validates (strict) against the Kubernetes schemas bundled in
# kubernetes-validate, and the policy check (k8s_policy.py) passes. The policy
# check must also reject a manifest that breaks its rules (fixtures/broken.yaml).
# Tools: scripts/deploy-deps.
set -u
SRC=${BNB_SOURCE_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
K8S_VERSION=${K8S_VERSION:-1.30.0}
KUSTOMIZE=$SRC/.deps/bin/kustomize
[ -x "$KUSTOMIZE" ] || KUSTOMIZE=$(command -v kustomize || true)
VALIDATE=$SRC/.deps/venv/bin/kubernetes-validate
PY=$SRC/.deps/venv/bin/python
if [ -z "$KUSTOMIZE" ] || [ ! -x "$VALIDATE" ]; then
    echo "check-k8s: kustomize or kubernetes-validate missing: run scripts/deploy-deps" >&2
    exit 77
fi
OUT=$(mktemp -d /tmp/bearbnb-k8s.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
fail=0
# The host refuses unknown BEARBNB_* settings: check the ConfigMaps against its keys.
HOSTCFG=""
[ -f "$SRC/host/core/config.c" ] && HOSTCFG="--host-config $SRC/host/core/config.c"
# With a built program: it must accept every Deployment's environment (--check-config).
BUILD=${BNB_BUILD_ROOT:-$SRC/build}
if [ -x "$BUILD/bearbnb" ]; then
    HOSTCFG="$HOSTCFG --check-config $BUILD/bearbnb $BUILD/plugins"
else
    echo "note: no $BUILD/bearbnb: environments not run through bearbnb --check-config"
fi
for overlay in all-in-one per-service; do
    if ! "$KUSTOMIZE" build "$SRC/deploy/k8s/overlays/$overlay" >"$OUT/$overlay.yaml" 2>"$OUT/err"; then
        echo "FAIL render $overlay: $(cat "$OUT/err")"; fail=1; continue
    fi
    n=$(grep -c '^kind:' "$OUT/$overlay.yaml")
    echo "ok render $overlay ($n objects)"
    if "$VALIDATE" --strict --quiet -k "$K8S_VERSION" "$OUT/$overlay.yaml" >"$OUT/val" 2>&1; then
        echo "ok schema $overlay (Kubernetes $K8S_VERSION, strict)"
    else
        echo "FAIL schema $overlay:"; cat "$OUT/val"; fail=1
    fi
    if "$PY" "$SRC/tests/deploy/k8s_policy.py" $HOSTCFG "$OUT/$overlay.yaml"; then
        echo "ok policy $overlay"
    else
        echo "FAIL policy $overlay"; fail=1
    fi
done
# Overlay-specific expectations.
if [ -s "$OUT/per-service.yaml" ]; then
    for kind in "Deployment 7" "HorizontalPodAutoscaler 6" "StatefulSet 4" "Secret 6"; do
        set -- $kind
        got=$(grep -c "^kind: $1\$" "$OUT/per-service.yaml")
        [ "$got" = "$2" ] && echo "ok per-service has $got $1" || { echo "FAIL per-service: $got $1, want $2"; fail=1; }
    done
fi
# Keycloak: the gateway trusts its realm's keys, the realm is imported from a
# ConfigMap, and that realm agrees with the one the tests run (roles, web client, audience).
if [ -s "$OUT/per-service.yaml" ]; then
    if "$PY" - "$OUT/per-service.yaml" "$SRC/scripts/infra.d/keycloak-realm.json" <<'PYEOF'
import json, sys, yaml
objs = [o for o in yaml.safe_load_all(open(sys.argv[1])) if o]
def one(kind, prefix):
    return [o for o in objs if o["kind"] == kind and o["metadata"]["name"].startswith(prefix)][0]
errs = []
gw = one("ConfigMap", "bearbnb-gateway")["data"]
url = gw.get("BEARBNB_AUTH_JWKS_URL", "")
if not url.startswith("http://keycloak:8080/realms/bearbnb/"):
    errs.append("gateway BEARBNB_AUTH_JWKS_URL %r does not point at the keycloak Service" % url)
kc = one("Deployment", "keycloak")
spec = kc["spec"]["template"]["spec"]
vol = [v for v in spec["volumes"] if "configMap" in v][0]
mount = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == vol["name"]][0]
if mount["mountPath"] != "/opt/keycloak/data/import" or "--import-realm" not in spec["containers"][0]["args"]:
    errs.append("keycloak does not import its realm from the ConfigMap")
cm = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == vol["configMap"]["name"]][0]
realm = json.loads(cm["data"]["bearbnb-realm.json"])
test = json.load(open(sys.argv[2]))
if realm["realm"] != test["realm"] or {r["name"] for r in realm["roles"]["realm"]} != {"host", "guest"}:
    errs.append("realm name/roles differ from scripts/infra.d/keycloak-realm.json")
web = lambda r: [c for c in r["clients"] if c["clientId"] == "bearbnb-web"][0]
for k in ("publicClient", "standardFlowEnabled", "protocolMappers"):
    if web(realm).get(k) != web(test).get(k):
        errs.append("bearbnb-web %s differs from the test realm" % k)
if web(realm)["attributes"].get("pkce.code.challenge.method") != "S256":
    errs.append("bearbnb-web without PKCE S256")
if gw.get("BEARBNB_AUTH_AUDIENCE") != web(realm)["protocolMappers"][0]["config"]["included.custom.audience"]:
    errs.append("the gateway's audience is not the one the realm's mapper puts in tokens")
for e in errs:
    print("FAIL keycloak: " + e)
sys.exit(1 if errs else 0)
PYEOF
    then echo "ok per-service: gateway trusts Keycloak's realm bearbnb, imported from a ConfigMap"; else fail=1; fi
fi
if [ -s "$OUT/all-in-one.yaml" ]; then
    grep -q '^kind: PersistentVolumeClaim$' "$OUT/all-in-one.yaml" && grep -q 'claimName: bearbnb-data' "$OUT/all-in-one.yaml" \
        && echo "ok all-in-one mounts its PVC" || { echo "FAIL all-in-one: no data PVC"; fail=1; }
fi
# The checker must be able to fail: a broken manifest yields every violation.
"$PY" "$SRC/tests/deploy/k8s_policy.py" $HOSTCFG "$SRC/tests/deploy/fixtures/broken.yaml" >"$OUT/neg" 2>&1
rc=$?
for want in "noprobes container bearbnb: no startupProbe" "no livenessProbe" "no readinessProbe" \
            "no limits.memory" "envFrom: no ConfigMap missing-config" "no-such-deployment, no such Deployment" \
            "no CPU utilization target" "no scale-down stabilization window" "sets replicas" \
            "no preStop hook" "matches no pod template" ${HOSTCFG:+"BEARBNB_NO_SUCH_KEY is no host setting"}; do
    grep -qF "$want" "$OUT/neg" || { echo "FAIL policy self-test: '$want' not reported"; fail=1; }
done
[ $rc -ne 0 ] && echo "ok policy rejects fixtures/broken.yaml ($(grep -c '^POLICY' "$OUT/neg") violations)" \
    || { echo "FAIL policy accepted fixtures/broken.yaml"; fail=1; }
# --check-config must be able to fail: a plugin that is not installed.
if [ -x "$BUILD/bearbnb" ] && [ -s "$OUT/per-service.yaml" ]; then
    sed 's/BEARBNB_PLUGINS: room$/BEARBNB_PLUGINS: no-such-plugin/' "$OUT/per-service.yaml" >"$OUT/bad-env.yaml"
    if "$PY" "$SRC/tests/deploy/k8s_policy.py" --check-config "$BUILD/bearbnb" "$BUILD/plugins" "$OUT/bad-env.yaml" |
        grep "bearbnb-room: bearbnb --check-config refuses" >/dev/null; then
        echo "ok --check-config refuses a Deployment whose plugin is not installed"
    else
        echo "FAIL --check-config accepted BEARBNB_PLUGINS=no-such-plugin"; fail=1
    fi
fi
# Schema validation must be able to fail too.
printf 'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {selector: {}, template: {spec: {containers: [{name: a, image: b, livenessProbe: {httpGet: {path: /healthz}}, bogus: 1}]}}}\n' >"$OUT/bad.yaml"
if "$VALIDATE" --strict --quiet -k "$K8S_VERSION" "$OUT/bad.yaml" >/dev/null 2>&1; then
    echo "FAIL schema validation accepted an unknown field"; fail=1
else
    echo "ok schema validation rejects an unknown field"
fi
exit $fail
