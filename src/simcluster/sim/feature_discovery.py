"""GPU feature discovery (GFD, k8s-device-plugin v0.17), simulated where its pod runs.

The labels follow ``internal/lm`` of the plugin's repository, with the ``MIG_STRATEGY`` of GFD's pod
(absent: ``none``):

* always: ``gpu.machine``, the CUDA driver and runtime versions, ``mig.capable``, ``mps.capable``
  (``false``: no MPS sharing configured), ``gpu.mode`` and the full-GPU labels: ``gpu.product`` (the
  NVML name with spaces turned into ``-``), ``gpu.count`` (every GPU, MIG-enabled or not),
  ``gpu.replicas`` (``0`` when all GPUs are MIG-enabled, as their labeler has no sharing; ``1`` once a
  GPU without MIG overrides it), ``gpu.sharing-strategy``, ``gpu.memory``, ``gpu.family`` (from the compute
  capability), ``gpu.compute.major``/``minor``;
* ``single`` and ``mixed`` add ``mig.strategy``; ``single`` overrides the ``gpu.*`` labels with the one MIG
  device type (``<product>-MIG-<profile>``, its count, memory, multiprocessors, slices and engines), or
  labels the node ``<product>-MIG-INVALID`` with count, replicas and memory 0 when a MIG-enabled GPU is
  empty, MIG-enabled and disabled GPUs are mixed, or the MIG devices are of more than one type (none
  MIG-enabled: as ``none``); ``mixed`` adds ``mig-<profile>.*`` for each MIG device type.

MIG device attributes are NVML's (``nvmlDeviceGetAttributes`` of the MIG device): its GPU instance's
memory, slices and engines, its compute instance's multiprocessors and slices, from the model's tables.
While GFD's pod is away its labels stay as they were.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable

from simcluster.sim import hardware, names
from simcluster.sim.gpus import GpuModel
from simcluster.sim.hardware import Gpu, MigDevice
from simcluster.sim.pod_env import pod_env
from simcluster.sim.view import Clock, NodeView, Wake, Writer, start_delay_left

# The simulated node's driver stack and machine (what NVML and /sys/class/dmi/id/product_name would say).
DRIVER_VERSION = "580.95.05"
CUDA_DRIVER_VERSION = (13, 0)
MACHINE_TYPE = "SimCluster GPU Node"

# Label keys GFD owns (it removes them when they no longer apply); other nvidia.com/ labels are not its.
_OWNED = re.compile(r"^nvidia\.com/(gpu\.(count|replicas|sharing-strategy|product|memory|family|compute\.|mode|"
                    r"machine|multiprocessors|slices\.|engines\.|clique)|mig-|mig\.capable$|mig\.strategy$|mps\.|"
                    r"cuda\.|gfd\.)")


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


def _full_gpu_labels(model: GpuModel, gpus: list[Gpu]) -> dict[str, str]:
    major, minor = model.compute_capability
    labels = {
        "nvidia.com/gpu.product": product(model.product),
        "nvidia.com/gpu.count": str(len(gpus)),
        # The MIG-enabled GPUs' labeler has no sharing config (replicas 0); a GPU without MIG overrides it.
        "nvidia.com/gpu.replicas": "1" if any(not gpu.mig_enabled for gpu in gpus) else "0",
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/gpu.memory": str(model.memory_mib),
    }
    if major:
        labels.update({"nvidia.com/gpu.family": family(major, minor), "nvidia.com/gpu.compute.major": str(major),
                       "nvidia.com/gpu.compute.minor": str(minor)})
    return labels


def _mig_labels(prefix: str, model: GpuModel, device: MigDevice, count: int) -> dict[str, str]:
    labels = {f"{prefix}.product": product(model.product, "MIG", device.name.replace("+", ".")),
              f"{prefix}.count": str(count), f"{prefix}.replicas": "1", f"{prefix}.sharing-strategy": "none"}
    labels.update({f"{prefix}.{key}": str(value) for key, value in device.attributes().items()})
    return labels


def _by_type(devices: list[MigDevice]) -> dict[str, tuple[MigDevice, int]]:
    counts = Counter(device.name for device in devices)
    first = {}
    for device in devices:
        first.setdefault(device.name, device)
    return {name: (first[name], count) for name, count in counts.items()}


def _single(model: GpuModel, gpus: list[Gpu]) -> dict[str, str]:
    enabled = [gpu for gpu in gpus if gpu.mig_enabled]
    if not enabled:
        return {}
    devices = hardware.mig_devices(model, gpus)
    types = _by_type(devices)
    if any(not gpu.devices() for gpu in enabled) or len(enabled) != len(gpus) or len(types) != 1:
        return {"nvidia.com/gpu.product": product(model.product, "MIG", "INVALID"), "nvidia.com/gpu.count": "0",
                "nvidia.com/gpu.replicas": "0", "nvidia.com/gpu.sharing-strategy": "",
                "nvidia.com/gpu.memory": "0"}
    ((device, count),) = types.values()
    return _mig_labels("nvidia.com/gpu", model, device, count)


def _mixed(model: GpuModel, gpus: list[Gpu]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for name, (device, count) in sorted(_by_type(hardware.mig_devices(model, gpus)).items()):
        labels.update(_mig_labels(names.MIG_RESOURCE_PREFIX + name.replace("+", "."), model, device, count))
    return labels


def gfd_labels(model: GpuModel, gpus: list[Gpu], strategy: str) -> dict[str, str]:
    """The labels GFD writes for a node with these GPUs (without the timestamp)."""
    major, minor, rev = [*DRIVER_VERSION.split("."), "", ""][:3]
    cuda_major, cuda_minor = CUDA_DRIVER_VERSION
    labels = {
        "nvidia.com/gpu.machine": sanitise(MACHINE_TYPE),
        "nvidia.com/cuda.driver.major": major, "nvidia.com/cuda.driver.minor": minor,
        "nvidia.com/cuda.driver.rev": rev,
        "nvidia.com/cuda.runtime.major": str(cuda_major), "nvidia.com/cuda.runtime.minor": str(cuda_minor),
        "nvidia.com/cuda.driver-version.major": major, "nvidia.com/cuda.driver-version.minor": minor,
        "nvidia.com/cuda.driver-version.revision": rev, "nvidia.com/cuda.driver-version.full": DRIVER_VERSION,
        "nvidia.com/cuda.runtime-version.major": str(cuda_major),
        "nvidia.com/cuda.runtime-version.minor": str(cuda_minor),
        "nvidia.com/cuda.runtime-version.full": f"{cuda_major}.{cuda_minor}",
        names.MIG_CAPABLE: "true" if model.mig_capable else "false",
        "nvidia.com/mps.capable": "false",
    }
    if not gpus:
        return labels
    labels.update(_full_gpu_labels(model, gpus))
    if strategy in ("single", "mixed"):
        labels["nvidia.com/mig.strategy"] = strategy
        labels.update(_single(model, gpus) if strategy == "single" else _mixed(model, gpus))
    labels["nvidia.com/gpu.mode"] = "compute"  # data-center GPUs are 3D controllers
    return labels


class FeatureDiscovery:
    """Keeps GFD's labels on the node while its pod runs."""

    def __init__(self, writer: Writer, clock: Clock, wake: Wake, start_delay_s: float,
                 ready_at: dict[str, float], model_of: Callable[[str], GpuModel | None]):
        self.writer = writer
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
        desired = gfd_labels(model, hardware.gpus(view.node), strategy)
        current = {k: v for k, v in view.labels.items() if owned(k) and k != names.GFD_TIMESTAMP}
        if current == desired:
            return
        patch: dict[str, str | None] = {key: None for key in current if key not in desired}
        patch.update(desired)
        # The timestamp changes only with the labels (real GFD rewrites it every minute), to keep large fleets cheap.
        patch[names.GFD_TIMESTAMP] = str(int(time.time()))
        self.writer.patch_node_labels(view.name, patch)
