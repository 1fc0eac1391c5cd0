"""The real helm CLI, driven for one release: what is deployed, and install/upgrade/uninstall.

Every failure becomes one sentence built from helm's own last error line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

import yaml


class HelmError(Exception):
    pass


@dataclass(frozen=True)
class Deployed:
    chart: str          # e.g. "gpu-operator-v26.7.0"
    app_version: str
    revision: int
    status: str         # deployed, failed, pending-upgrade, ...
    values: dict[str, Any]


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    return (errors[-1] if errors else (lines[-1] if lines else "no output")).removeprefix("Error: ")


class Helm:
    def __init__(self, binary: str = "helm", kubeconfig: str | None = None, context: str | None = None,
                 timeout_s: int = 600):
        found = shutil.which(binary) if os.sep not in binary else (binary if os.access(binary, os.X_OK) else None)
        if not found:
            raise HelmError(f"helm not found ({binary!r} is not an executable on PATH): install helm 3 or set "
                            f"the helm binary path")
        self.binary = found
        self.kubeconfig = kubeconfig
        self.context = context
        self.timeout_s = timeout_s

    def _run(self, *args: str, what: str) -> str:
        command = [self.binary, *args]
        if self.kubeconfig:
            command += ["--kubeconfig", self.kubeconfig]
        if self.context:
            command += ["--kube-context", self.context]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout_s + 60)
        except subprocess.TimeoutExpired:
            raise HelmError(f"{what}: helm did not finish within {self.timeout_s + 60} s") from None
        if result.returncode != 0:
            raise HelmError(f"{what}: {_last_error_line(result.stderr or result.stdout)}")
        return result.stdout

    def version(self) -> str:
        return self._run("version", "--short", what="helm version").strip()

    def deployed(self, release: str, namespace: str) -> Deployed | None:
        listing = json.loads(self._run("list", "--namespace", namespace, "--all", "--filter", f"^{release}$",
                                       "--output", "json", what=f"list release {namespace}/{release}") or "[]")
        if not listing:
            return None
        entry = listing[0]
        values = json.loads(self._run("get", "values", release, "--namespace", namespace, "--output", "json",
                                      what=f"read values of release {namespace}/{release}") or "{}") or {}
        return Deployed(entry.get("chart", ""), entry.get("app_version", ""), int(entry.get("revision", 0)),
                        entry.get("status", ""), values)

    def chart_identity(self, chart: str, version: str | None, repo_url: str | None) -> str:
        """``<name>-<version>`` as ``helm list`` reports it, for the chart that would be installed."""
        args = ["show", "chart", chart]
        if repo_url:
            args += ["--repo", repo_url]
        if version:
            args += ["--version", version]
        meta = yaml.safe_load(self._run(*args, what=f"read chart {chart}"))
        return f"{meta['name']}-{meta['version']}"

    def pull(self, chart: str, version: str | None, repo_url: str | None, into: str) -> str:
        """The chart's directory: ``chart`` itself when it is a directory, else the chart pulled into ``into``."""
        if os.path.isdir(chart):
            return chart
        args = ["pull", chart, "--untar", "--untardir", into]
        if repo_url:
            args += ["--repo", repo_url]
        if version:
            args += ["--version", version]
        self._run(*args, what=f"pull chart {chart}")
        pulled = [entry for entry in os.listdir(into) if os.path.isdir(os.path.join(into, entry))]
        if len(pulled) != 1:
            raise HelmError(f"pull chart {chart}: expected one chart directory, found {pulled or 'none'}")
        return os.path.join(into, pulled[0])

    def upgrade(self, release: str, namespace: str, chart: str, version: str | None, repo_url: str | None,
                values: dict[str, Any], wait: bool) -> Deployed:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
            yaml.safe_dump(values, handle, sort_keys=True)
            values_file = handle.name
        try:
            args = ["upgrade", release, chart, "--install", "--namespace", namespace, "--create-namespace",
                    "--values", values_file, "--reset-values", "--timeout", f"{self.timeout_s}s"]
            if version:
                args += ["--version", version]
            if repo_url:
                args += ["--repo", repo_url]
            if wait:
                args.append("--wait")
            self._run(*args, what=f"install or upgrade release {namespace}/{release}")
        finally:
            os.unlink(values_file)
        deployed = self.deployed(release, namespace)
        if deployed is None:
            raise HelmError(f"release {namespace}/{release} is missing right after helm installed it")
        return deployed

    def uninstall(self, release: str, namespace: str) -> None:
        self._run("uninstall", release, "--namespace", namespace, "--wait", "--timeout", f"{self.timeout_s}s",
                  what=f"uninstall release {namespace}/{release}")
