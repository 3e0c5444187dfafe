#!/usr/bin/env python3
"""Drives a CodeDeploy revision's hooks the way the CodeDeploy agent does on an
EC2/on-premises Linux host, against a root directory (BEARBNB_ROOT) instead of /.

  codedeploy_agent.py --root R --bundle DIR --deployment-id ID [--auto-rollback]

Per deployment, like the agent: ApplicationStop from the last successfully
deployed revision's archive; DownloadBundle (copy the bundle into
deployment-root/<group>/<id>/deployment-archive); BeforeInstall; Install (the
appspec `files`, honouring file_exists_behavior); AfterInstall;
ApplicationStart; ValidateService. Each hook script runs with the agent's
environment (LIFECYCLE_EVENT, DEPLOYMENT_ID, APPLICATION_NAME,
DEPLOYMENT_GROUP_NAME, DEPLOYMENT_GROUP_ID), from the archive directory, under
its appspec timeout; a non-zero exit or a timeout fails the deployment.
--auto-rollback: on failure, redeploy the last successful revision as a new
deployment (what CodeDeploy's automatic rollback does).
Exit: 0 deployed, 1 failed, 3 failed and rolled back.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

import yaml

EVENTS_AFTER_INSTALL = ["AfterInstall", "ApplicationStart", "ValidateService"]


def log(msg):
    print("[agent] " + msg, file=sys.stderr, flush=True)


class Agent:
    def __init__(self, root, app, group, group_id, extra_env):
        self.root, self.app, self.group, self.group_id = root, app, group, group_id
        self.extra_env = extra_env
        self.droot = os.path.join(root, "opt/codedeploy-agent/deployment-root", group_id)
        os.makedirs(self.droot, exist_ok=True)
        self.last_ok_file = os.path.join(self.droot, "last-successful-install")

    def last_successful(self):
        try:
            with open(self.last_ok_file) as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def run_hooks(self, archive, event, deployment_id):
        with open(os.path.join(archive, "appspec.yml")) as f:
            spec = yaml.safe_load(f)
        for hook in (spec.get("hooks") or {}).get(event) or []:
            script = os.path.join(archive, hook["location"])
            env = dict(os.environ)
            env.update(self.extra_env)
            env.update(LIFECYCLE_EVENT=event, DEPLOYMENT_ID=deployment_id,
                       APPLICATION_NAME=self.app, DEPLOYMENT_GROUP_NAME=self.group,
                       DEPLOYMENT_GROUP_ID=self.group_id)
            timeout = int(hook.get("timeout", 3600))
            t0 = time.monotonic()
            try:
                p = subprocess.run([script], cwd=archive, env=env, timeout=timeout,
                                   stdin=subprocess.DEVNULL)
                rc = p.returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
            log("%s %s %s: %s (%.1fs)" % (deployment_id, event, hook["location"], rc,
                                          time.monotonic() - t0))
            if rc != 0:
                return False
        return True

    def install(self, archive):
        with open(os.path.join(archive, "appspec.yml")) as f:
            spec = yaml.safe_load(f)
        behavior = spec.get("file_exists_behavior", "DISALLOW")
        for entry in spec.get("files") or []:
            src = os.path.join(archive, entry["source"])
            dst = self.root + entry["destination"]
            for dirpath, _dirs, files in os.walk(src):
                rel = os.path.relpath(dirpath, src)
                target_dir = os.path.normpath(os.path.join(dst, rel))
                os.makedirs(target_dir, exist_ok=True)
                for name in files:
                    t = os.path.join(target_dir, name)
                    if os.path.lexists(t):
                        if behavior == "DISALLOW":
                            log("Install: %s exists (file_exists_behavior DISALLOW)" % t)
                            return False
                        if behavior == "RETAIN":
                            continue
                        os.remove(t)
                    shutil.copy2(os.path.join(dirpath, name), t)
        return True

    def deploy(self, bundle, deployment_id):
        log("deployment %s of %s" % (deployment_id, bundle))
        previous = self.last_successful()
        if previous and not self.run_hooks(previous, "ApplicationStop", deployment_id):
            return False
        archive = os.path.join(self.droot, deployment_id, "deployment-archive")
        shutil.rmtree(os.path.dirname(archive), ignore_errors=True)
        shutil.copytree(bundle, archive, symlinks=True)  # DownloadBundle
        if not self.run_hooks(archive, "BeforeInstall", deployment_id):
            return False
        if not self.install(archive):
            return False
        for event in EVENTS_AFTER_INSTALL:
            if not self.run_hooks(archive, event, deployment_id):
                return False
        with open(self.last_ok_file, "w") as f:
            f.write(archive)
        log("deployment %s succeeded" % deployment_id)
        return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--deployment-id", required=True)
    ap.add_argument("--application", default="bearbnb")
    ap.add_argument("--group", default="ci")
    ap.add_argument("--auto-rollback", action="store_true")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the hooks")
    a = ap.parse_args()
    extra = dict(e.split("=", 1) for e in a.env)
    extra["BEARBNB_ROOT"] = os.path.abspath(a.root)
    agent = Agent(os.path.abspath(a.root), a.application, a.group, "dg-" + a.group, extra)
    good = agent.last_successful()
    if agent.deploy(os.path.abspath(a.bundle), a.deployment_id):
        return 0
    log("deployment %s failed" % a.deployment_id)
    if a.auto_rollback and good:
        rid = a.deployment_id + "-rollback"
        log("automatic rollback: redeploying %s as %s" % (good, rid))
        # The rollback deployment's ApplicationStop runs from the last
        # successful revision, which is the one being redeployed.
        if agent.deploy(good, rid):
            return 3
        log("rollback %s failed" % rid)
    return 1


if __name__ == "__main__":
    sys.exit(main())
