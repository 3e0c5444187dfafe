#!/bin/sh
# Static checks of pipeline/Jenkinsfile (no Jenkins here): the stages are
# checkout -> build -> test -> image -> push -> deploy in that order; the
# ENVIRONMENT parameter exists; braces balance; every repository script it
# calls exists and is executable; every sh step's shell text parses (sh -n).
# Also checks pipeline/codedeploy/appspec.yml names every lifecycle hook with
# an executable script.
set -u
SRC=${BNB_SOURCE_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
PY=$SRC/.deps/venv/bin/python
[ -x "$PY" ] || PY=python3
exec "$PY" - "$SRC" <<'PYEOF'
import os, re, subprocess, sys, tempfile
src = sys.argv[1]
jf = open(os.path.join(src, "pipeline/Jenkinsfile")).read()
errs = []
body = re.sub(r"'''.*?'''|'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"|//[^\n]*", "", jf, flags=re.S)
if body.count("{") != body.count("}"):
    errs.append("unbalanced braces: %d { vs %d }" % (body.count("{"), body.count("}")))
stages = re.findall(r"stage\('([^']+)'\)", jf)
want = ["checkout", "build", "test", "image", "push", "deploy"]
if stages != want:
    errs.append("stages %s, want %s" % (stages, want))
for p in ("ENVIRONMENT",):
    if not re.search(r"name: '%s'" % p, jf):
        errs.append("no parameter %s" % p)
for script in sorted(set(re.findall(r"((?:scripts|deploy|pipeline)/[A-Za-z0-9_./-]+)", re.sub(r"(?m)^\s*//.*$", "", jf)))):
    path = os.path.join(src, script)
    if script.startswith("deploy/k8s") or script.endswith("/"):
        if not os.path.exists(path.rstrip("/").split("$")[0]):
            errs.append("missing %s" % script)
        continue
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        errs.append("%s: not an executable file" % script)
shells = re.findall(r"sh\s+'''(.*?)'''", jf, flags=re.S) + re.findall(r"sh\s+'((?:[^'\\\n]|\\.)*)'", jf)
for text in shells:
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write(text)
    r = subprocess.run(["sh", "-n", f.name], capture_output=True, text=True)
    os.unlink(f.name)
    if r.returncode != 0:
        errs.append("sh step does not parse: %s: %s" % (text.strip()[:60], r.stderr.strip()))
try:
    import yaml
    spec = yaml.safe_load(open(os.path.join(src, "pipeline/codedeploy/appspec.yml")))
    for ev in ("ApplicationStop", "BeforeInstall", "AfterInstall", "ApplicationStart", "ValidateService"):
        hooks = (spec.get("hooks") or {}).get(ev) or []
        if not hooks:
            errs.append("appspec: no %s hook" % ev)
        for h in hooks:
            p = os.path.join(src, "pipeline/codedeploy", h["location"])
            if not os.access(p, os.X_OK):
                errs.append("appspec %s: %s not executable" % (ev, h["location"]))
            r = subprocess.run(["sh", "-n", p], capture_output=True, text=True)
            if r.returncode != 0:
                errs.append("%s does not parse: %s" % (h["location"], r.stderr.strip()))
except ImportError:
    print("yaml missing: appspec not checked (scripts/deploy-deps)")
for e in errs:
    print("FAIL " + e)
print("jenkinsfile: %d stages, %d sh steps checked, %d problems" % (len(stages), len(shells), len(errs)))
sys.exit(1 if errs else 0)
PYEOF
