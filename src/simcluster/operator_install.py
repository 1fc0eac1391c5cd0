"""Installing NVIDIA's GPU Operator into a simulated cluster: its real Helm chart, with the cluster's helm.

``simcluster up`` (with the real operator) installs the chart of the pinned module as an admin
would, with the chart's defaults except the MIG strategy (``mixed``, as the simulated
operator's ClusterPolicy has it). node-feature-discovery is enabled as in a real install; its
pods are simulated like any pod whose image simcluster does not run, and the simulator
publishes the NFD labels itself. Scale runs may leave NFD out (``--without-nfd``).
"""

from __future__ import annotations

import datetime
import subprocess
import time
from pathlib import Path
from typing import Any

from migrollout.kube import KubeClient, KubeError
from simcluster.sim.names import POLICY_PATH

RELEASE = "gpu-operator"
STRATEGY = "mixed"


class InstallError(RuntimeError):
    pass


def values(nfd: bool) -> dict[str, str]:
    return {"mig.strategy": STRATEGY, "nfd.enabled": "true" if nfd else "false"}


def helm_install(helm: str, kubeconfig: str, chart: Path, namespace: str, nfd: bool = True,
                 timeout: float = 300) -> None:
    command = [helm, "install", RELEASE, str(chart), "--namespace", namespace, "--create-namespace",
               "--kubeconfig", kubeconfig]
    for key, value in values(nfd).items():
        command += ["--set", f"{key}={value}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise InstallError(f"helm install of {chart} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise InstallError(f"helm install of the GPU Operator chart {chart} failed: "
                           f"{done.stderr.strip() or done.stdout.strip()}")


def ready_since(api: KubeClient) -> float | None:
    """When the ClusterPolicy last became ready (epoch seconds), None while it is not."""
    try:
        policies, _ = api.list(POLICY_PATH, what="list ClusterPolicies")
    except KubeError:
        return None
    if not policies or (policies[0].get("status") or {}).get("state") != "ready":
        return None
    conditions: list[dict[str, Any]] = (policies[0].get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready" and c.get("status") == "True"), None)
    if ready is None or not ready.get("lastTransitionTime"):
        return time.time()
    moment = datetime.datetime.strptime(ready["lastTransitionTime"], "%Y-%m-%dT%H:%M:%SZ")
    return moment.replace(tzinfo=datetime.UTC).timestamp()
