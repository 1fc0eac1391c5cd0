"""GPU feature discovery (GFD, k8s-device-plugin v0.17.4, the chart's), simulated where its pod runs.

What GFD reads is NVIDIA's own reading of the node: its NVML resource manager (``internal/resource``, over
go-nvlib) run for real over the node's host state through the GPU-less NVML (``simcluster.device_plugin_probe``
``devices``): the driver and CUDA driver versions, and per GPU its name, memory, compute capability, MIG
capability and mode, PCI class, and MIG devices with their profile names and NVML attributes
(``nvmlDeviceGetAttributes``). GFD's own binary cannot be built here (its labeler needs node-feature-discovery
v0.15.7, which the module proxy refuses), so the labels are written from those reads here, following
``internal/lm`` of the plugin's repository, with the ``MIG_STRATEGY`` of GFD's pod (absent: ``none``):

* always: ``gpu.machine``, the CUDA driver and runtime versions, ``mig.capable``, ``mps.capable``
  (``false``: no MPS sharing configured), ``gpu.mode`` (from the PCI class) and the full-GPU labels:
  ``gpu.product`` (the NVML name with spaces turned into ``-``), ``gpu.count`` (every GPU, MIG-enabled or
  not), ``gpu.replicas`` (``0`` when all GPUs are MIG-enabled, as their labeler has no sharing; ``1`` once a
  GPU without MIG overrides it), ``gpu.sharing-strategy``, ``gpu.memory``, ``gpu.family`` (from the compute
  capability), ``gpu.compute.major``/``minor``;
* ``single`` and ``mixed`` add ``mig.strategy``; ``single`` overrides the ``gpu.*`` labels with the one MIG
  device type (``<product>-MIG-<profile>``, its count, memory, multiprocessors, slices and engines), or
  labels the node ``<product>-MIG-INVALID`` with count, replicas and memory 0 when a MIG-enabled GPU is
  empty, MIG-enabled and disabled GPUs are mixed, or the MIG devices are of more than one type (none
  MIG-enabled: as ``none``); ``mixed`` adds ``mig-<profile>.*`` for each MIG device type.

While GFD's pod is away its labels stay as they were.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from simcluster.sim import hardware, names
from simcluster.sim.gpus import GpuModel
from simcluster.sim.pod_env import pod_env
from simcluster.sim.view import Clock, NodeView, Wake, Writer, start_delay_left

# The simulated node's machine (what /sys/class/dmi/id/product_name would say; not NVML's).
MACHINE_TYPE = "SimCluster GPU Node"

# Label keys GFD owns (it removes them when they no longer apply); other nvidia.com/ labels are not its.
_OWNED = re.compile(r"^nvidia\.com/(gpu\.(count|replicas|sharing-strategy|product|memory|family|compute\.|mode|"
                    r"machine|multiprocessors|slices\.|engines\.|clique)|mig-|mig\.capable$|mig\.strategy$|mps\.|"
                    r"cuda\.|gfd\.)")


class Probe(Protocol):
    """``simcluster.device_plugin_probe.DevicePluginProbe``: NVIDIA's reading of a node's GPUs."""

    def devices(self, node: str, model: GpuModel, gpus: list[hardware.Gpu]) -> dict[str, Any]: ...


def owned(key: str) -> bool:
    return bool(_OWNED.match(key))


def sanitise(text: str) -> str:
    """lm.sanitise: drop characters other than letters, digits, '-', '_', '.', ' ', then spaces become '-'."""
    return "-".join(re.sub(r"[^A-Za-z0-9\-_. ]", "", text).split())


def product(*parts: str) -> str:
    return "-".join(sanitise(part) for part in parts if part)


def family(major: int, minor: int) -> str:
    """lm.getArchFamily."""
    if major == 7:
        return "volta" if minor < 5 else "turing"
    if major == 8:
        return "ampere" if minor < 9 else "ada-lovelace"
    return {1: "tesla", 2: "fermi", 3: "kepler", 5: "maxwell", 6: "pascal", 9: "hopper", 10: "blackwell",
            12: "blackwell"}.get(major, "undefined")


def _gpu_mode(gpus: list[dict[str, Any]]) -> str:
    """lm's gpu.mode: GPUs all VGA controllers (PCI class 0x030000) are in graphics mode, all 3D controllers
    (0x030200) in compute; GPUs of different classes, or of another class, are unknown."""
    classes = {gpu["pci_class"] for gpu in gpus}
    return {0x030000: "graphics", 0x030200: "compute"}.get(classes.pop(), "unknown") if len(classes) == 1 \
        else "unknown"


def _full_gpu_labels(gpus: list[dict[str, Any]]) -> dict[str, str]:
    first = gpus[0]
    major, minor = first["compute_capability"]
    labels = {
        "nvidia.com/gpu.product": product(first["name"]),
        "nvidia.com/gpu.count": str(len(gpus)),
        # The MIG-enabled GPUs' labeler has no sharing config (replicas 0); a GPU without MIG overrides it.
        "nvidia.com/gpu.replicas": "1" if any(not gpu["mig_enabled"] for gpu in gpus) else "0",
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/gpu.memory": str(first["memory_mib"]),
    }
    if major:
        labels.update({"nvidia.com/gpu.family": family(major, minor), "nvidia.com/gpu.compute.major": str(major),
                       "nvidia.com/gpu.compute.minor": str(minor)})
    return labels


def _mig_labels(prefix: str, product_name: str, device: dict[str, Any], count: int) -> dict[str, str]:
    labels = {f"{prefix}.product": product(product_name, "MIG", device["name"]),
              f"{prefix}.count": str(count), f"{prefix}.replicas": "1", f"{prefix}.sharing-strategy": "none"}
    labels.update({f"{prefix}.{key}": str(value) for key, value in device["attributes"].items()})
    return labels


def _by_type(gpus: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], int]]:
    devices = [device for gpu in gpus for device in gpu["mig_devices"]]
    counts = Counter(device["name"] for device in devices)
    first: dict[str, dict[str, Any]] = {}
    for device in devices:
        first.setdefault(device["name"], device)
    return {name: (first[name], count) for name, count in counts.items()}


def _single(gpus: list[dict[str, Any]]) -> dict[str, str]:
    enabled = [gpu for gpu in gpus if gpu["mig_enabled"]]
    if not enabled:
        return {}
    types = _by_type(gpus)
    if any(not gpu["mig_devices"] for gpu in enabled) or len(enabled) != len(gpus) or len(types) != 1:
        return {"nvidia.com/gpu.product": product(gpus[0]["name"], "MIG", "INVALID"), "nvidia.com/gpu.count": "0",
                "nvidia.com/gpu.replicas": "0", "nvidia.com/gpu.sharing-strategy": "",
                "nvidia.com/gpu.memory": "0"}
    ((device, count),) = types.values()
    return _mig_labels("nvidia.com/gpu", gpus[0]["name"], device, count)


def _mixed(gpus: list[dict[str, Any]]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for name, (device, count) in sorted(_by_type(gpus).items()):
        labels.update(_mig_labels(names.MIG_RESOURCE_PREFIX + name, gpus[0]["name"], device, count))
    return labels


def gfd_labels(reads: dict[str, Any], strategy: str) -> dict[str, str]:
    """The labels GFD writes (without the timestamp) for what it read of a node (``devices`` of the probe)."""
    major, minor, rev = [*reads["driver_version"].split("."), "", ""][:3]
    cuda_major, cuda_minor = reads["cuda_driver_version"]
    gpus = reads.get("devices") or []
    labels = {
        "nvidia.com/gpu.machine": sanitise(MACHINE_TYPE),
        "nvidia.com/cuda.driver.major": major, "nvidia.com/cuda.driver.minor": minor,
        "nvidia.com/cuda.driver.rev": rev,
        "nvidia.com/cuda.runtime.major": str(cuda_major), "nvidia.com/cuda.runtime.minor": str(cuda_minor),
        "nvidia.com/cuda.driver-version.major": major, "nvidia.com/cuda.driver-version.minor": minor,
        "nvidia.com/cuda.driver-version.revision": rev, "nvidia.com/cuda.driver-version.full": reads["driver_version"],
        "nvidia.com/cuda.runtime-version.major": str(cuda_major),
        "nvidia.com/cuda.runtime-version.minor": str(cuda_minor),
        "nvidia.com/cuda.runtime-version.full": f"{cuda_major}.{cuda_minor}",
        names.MIG_CAPABLE: "true" if any(gpu["mig_capable"] for gpu in gpus) else "false",
        "nvidia.com/mps.capable": "false",
    }
    if not gpus:
        return labels
    labels.update(_full_gpu_labels(gpus))
    if strategy in ("single", "mixed"):
        labels["nvidia.com/mig.strategy"] = strategy
        labels.update(_single(gpus) if strategy == "single" else _mixed(gpus))
    labels["nvidia.com/gpu.mode"] = _gpu_mode(gpus)
    return labels


class FeatureDiscovery:
    """Keeps GFD's labels on the node while its pod runs."""

    def __init__(self, writer: Writer, clock: Clock, wake: Wake, start_delay_s: float,
                 ready_at: dict[str, float], model_of: Callable[[str], GpuModel | None], probe: Probe):
        self.writer = writer
        self.probe = probe
        self.clock = clock
        self.wake = wake
        self.start_delay_s = start_delay_s
        self.ready_at = ready_at
        self.model_of = model_of

    def reconcile(self, view: NodeView) -> None:
        key = hardware.model_key(view.node)
        model = self.model_of(key) if key else None
        pod = view.running_operand(names.APP_GFD)
        if model is None or pod is None:
            return
        left = start_delay_left(self.ready_at, pod, self.clock(), self.start_delay_s)
        if left > 0:
            self.wake(view.name, left)
            return
        strategy = pod_env(pod, "MIG_STRATEGY") or "none"
        desired = gfd_labels(self.probe.devices(view.name, model, hardware.gpus(view.node)), strategy)
        current = {k: v for k, v in view.labels.items() if owned(k) and k != names.GFD_TIMESTAMP}
        if current == desired:
            return
        patch: dict[str, str | None] = {key: None for key in current if key not in desired}
        patch.update(desired)
        # The timestamp changes only with the labels (real GFD rewrites it every minute), to keep large fleets cheap.
        patch[names.GFD_TIMESTAMP] = str(int(time.time()))
        self.writer.patch_node_labels(view.name, patch)
