"""Fleet files: which simulated nodes a cluster has, their GPUs, and injected faults.

Example (every field but ``pools[].name`` and ``pools[].count`` is optional)::

    simulation:                 # cluster-wide timing of the simulated NVIDIA components
      apply_delay_s: 0.5        # how long a MIG apply takes
      reboot_s: 5               # how long a simulated reboot keeps a node NotReady
    pools:
      - name: a100-80gb         # nodes are named <pool>-<index>, index from 1
        count: 2
        gpu: A100-SXM4-80GB     # a model of the simulator's hardware (data/gpus.yaml); omit for CPU nodes
        gpus_per_node: 8
        mig_config: all-1g.10gb # initial MIG config of the operator's default MIG ConfigMap (already applied,
                                # node labelled); default: MIG disabled
        # mig_devices: {3g.40gb: 2}  # or: GPUs partitioned outside Kubernetes, per GPU, no label
        #                          (the operator then labels the node all-disabled, as on a real cluster)
        cpu: "96"
        memory: 1Ti
        labels: {pool: training}
        faults: {apply_fails: false}
        nodes:                  # per-node overrides of faults, by index
          2: {faults: {reboot_required: true}}

Fault knobs are those of ``simcluster.sim.faults.NodeFaults``: ``apply_delay_s`` (seconds),
``apply_fails``, ``reboot_required`` (a MIG mode change needs a reboot), ``reboot_fails`` (the mode
is still wrong after it), ``stuck_pending`` (the MIG manager's pod-wait bug: the state stays ``pending``).

Checking a pool's ``mig_config`` or ``mig_devices`` runs NVIDIA's code (mig-parted and the recorded
MIG tables, built by ``simcluster build``); fleets without them need nothing built.
"""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from simcluster.sim import gpus as gpu_models
from simcluster.sim.faults import NodeFaults
from simcluster.sim.gpus import GpuModel

DEFAULT_FLEET = Path(__file__).parent / "fleets" / "default.yaml"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|M|G|T|P)?$")


class FleetError(ValueError):
    pass


@dataclass(frozen=True)
class Simulation:
    apply_delay_s: float = 0.5
    reboot_s: float = 5.0
    gfd_delay_s: float = 0.5
    device_plugin_delay_s: float = 0.2
    pod_start_s: float = 0.0
    pod_stop_s: float = 0.0
    # Containers that run for real restart with the kubelet's crash-loop back-off: 10 s doubling to 5 min.
    restart_backoff_s: float = 10.0
    restart_backoff_max_s: float = 300.0
    operator_namespace: str = "gpu-operator"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    pool: str
    gpu: GpuModel | None
    gpu_count: int
    mig_config: str | None
    mig_devices: dict[str, int] | None
    cpu: str
    memory: str
    labels: dict[str, str]
    faults: NodeFaults


@dataclass(frozen=True)
class Pool:
    name: str
    count: int
    gpu: GpuModel | None = None
    gpus_per_node: int = 8
    mig_config: str | None = None
    mig_devices: dict[str, int] | None = None
    cpu: str = "64"
    memory: str = "512Gi"
    labels: dict[str, str] = field(default_factory=dict)
    faults: NodeFaults = field(default_factory=NodeFaults)
    node_faults: dict[int, dict[str, Any]] = field(default_factory=dict)

    def nodes(self) -> list[NodeSpec]:
        return [
            NodeSpec(
                name=f"{self.name}-{index}",
                pool=self.name,
                gpu=self.gpu,
                gpu_count=self.gpus_per_node if self.gpu else 0,
                mig_config=self.mig_config,
                mig_devices=self.mig_devices,
                cpu=self.cpu,
                memory=self.memory,
                labels=dict(self.labels),
                faults=self.faults.merged(self.node_faults.get(index, {})),
            )
            for index in range(1, self.count + 1)
        ]


@dataclass(frozen=True)
class Fleet:
    pools: tuple[Pool, ...]
    simulation: Simulation = Simulation()
    source: str = "<default>"

    def nodes(self) -> list[NodeSpec]:
        return [node for pool in self.pools for node in pool.nodes()]

    def scaled(self, total: int) -> Fleet:
        """The same pools with ``total`` nodes in all, shared in proportion (each pool keeps at least one)."""
        if total < len(self.pools):
            raise FleetError(f"--nodes {total}: the fleet has {len(self.pools)} pools; give at least that many nodes")
        current = sum(pool.count for pool in self.pools) or 1
        counts = [max(1, math.floor(pool.count * total / current)) for pool in self.pools]
        # Hand out what rounding left over, largest pools first.
        order = sorted(range(len(self.pools)), key=lambda i: -self.pools[i].count)
        index = 0
        while sum(counts) < total:
            counts[order[index % len(order)]] += 1
            index += 1
        while sum(counts) > total:
            candidate = max(range(len(counts)), key=lambda i: counts[i])
            counts[candidate] -= 1
        return replace(self, pools=tuple(replace(pool, count=count) for pool, count in zip(self.pools, counts,
                                                                                         strict=True)))


# -- loading and validation -----------------------------------------------------------------------------------

class _Located:
    """Finds the line of a path like ``pools[2].gpu`` in the YAML source."""

    def __init__(self, text: str):
        try:
            self.root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            self.root = None

    def line(self, path: list[str | int]) -> int | None:
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for part in path:
            if isinstance(node, yaml.MappingNode):
                match = next((v for k, v in node.value if str(k.value) == str(part)), None)
                key = next((k for k, v in node.value if str(k.value) == str(part)), None)
                if match is None:
                    return line
                line = key.start_mark.line + 1
                node = match
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line


class _Validator:
    def __init__(self, source: str, text: str):
        self.source = source
        self.located = _Located(text)

    def fail(self, path: list[str | int], message: str) -> FleetError:
        dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        line = self.located.line(path)
        where = f"{self.source}:{line}" if line else self.source
        return FleetError(f"{where}: {dotted or 'fleet'}: {message}")

    def mapping(self, value: Any, path: list[str | int], allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, "must be a mapping")
        unknown = sorted(set(map(str, value)) - allowed)
        if unknown:
            raise self.fail([*path, unknown[0]], f"unknown field (allowed: {', '.join(sorted(allowed))})")
        return value

    def number(self, value: Any, path: list[str | int], minimum: float = 0) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self.fail(path, f"must be a number >= {minimum:g}, not {value!r}")
        return float(value)

    def integer(self, value: Any, path: list[str | int], minimum: int, maximum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise self.fail(path, f"must be a whole number from {minimum} to {maximum}, not {value!r}")
        return value

    def boolean(self, value: Any, path: list[str | int]) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"must be true or false, not {value!r}")
        return value

    def quantity(self, value: Any, path: list[str | int]) -> str:
        text = str(value)
        if isinstance(value, bool) or not _QUANTITY.match(text):
            raise self.fail(path, f"must be a Kubernetes quantity such as 64 or 512Gi, not {value!r}")
        return text

    def faults(self, value: Any, path: list[str | int]) -> dict[str, Any]:
        knobs = NodeFaults.knobs()
        raw = self.mapping(value, path, set(knobs))
        result: dict[str, Any] = {}
        for key, item in raw.items():
            if knobs[key] is float:
                result[key] = self.number(item, [*path, key])
            else:
                result[key] = self.boolean(item, [*path, key])
        return result


def _validate(data: Any, source: str, text: str) -> Fleet:
    check = _Validator(source, text)
    top = check.mapping(data, [], {"pools", "simulation"})
    sim_raw = check.mapping(top.get("simulation"), ["simulation"], set(Simulation.__dataclass_fields__))
    sim_values: dict[str, Any] = {}
    for key, value in sim_raw.items():
        if key == "operator_namespace":
            if not isinstance(value, str) or not _DNS_LABEL.match(value):
                raise check.fail(["simulation", key], "must be a namespace name")
            sim_values[key] = value
        else:
            sim_values[key] = check.number(value, ["simulation", key])
    pools_raw = top.get("pools")
    if not isinstance(pools_raw, list) or not pools_raw:
        raise check.fail(["pools"], "must be a non-empty list of node pools")

    models = gpu_models.described()
    pools: list[Pool] = []
    seen: set[str] = set()
    for index, raw in enumerate(pools_raw):
        path: list[str | int] = ["pools", index]
        item = check.mapping(raw, path, set(Pool.__dataclass_fields__) - {"node_faults"} | {"nodes"})
        name = item.get("name")
        if not isinstance(name, str) or not _DNS_LABEL.match(name) or len(name) > 50:
            raise check.fail([*path, "name"], f"must be a lowercase DNS label (a-z, 0-9, -), not {name!r}")
        if name in seen:
            raise check.fail([*path, "name"], f"pool {name} is defined twice")
        seen.add(name)
        if "count" not in item:
            raise check.fail([*path], "count is required")
        count = check.integer(item["count"], [*path, "count"], 0, 5000)
        gpu: GpuModel | None = None
        if item.get("gpu") is not None:
            gpu = models.find(str(item["gpu"]))
            if gpu is None:
                raise check.fail([*path, "gpu"], f"unknown GPU model {item['gpu']!r} "
                                                 f"(known: {', '.join(models.keys())})")
        gpus = check.integer(item.get("gpus_per_node", 8), [*path, "gpus_per_node"], 1, 16)
        mig_config = item.get("mig_config")
        if mig_config is not None:
            if gpu is None or not gpu.mig_capable:
                raise check.fail([*path, "mig_config"], "only pools of MIG-capable GPUs take a mig_config")
            mig_config = str(mig_config)
            problem = _boot_problem(check, [*path, "mig_config"], gpu, gpus, mig_config, None)
            if problem:
                raise check.fail([*path, "mig_config"], f"{mig_config}: {problem}")
        mig_devices = item.get("mig_devices")
        if mig_devices is not None:
            mig_devices = _validate_devices(check, [*path, "mig_devices"], mig_devices, gpu, mig_config)
        labels = check.mapping(item.get("labels"), [*path, "labels"], set(map(str, (item.get("labels") or {}))))
        for key, value in labels.items():
            if not _LABEL_KEY.match(str(key)) or not _LABEL_VALUE.match(str(value)) or len(str(value)) > 63:
                raise check.fail([*path, "labels", key], f"{key}={value} is not a valid Kubernetes label")
        faults = check.faults(item.get("faults"), [*path, "faults"])
        node_faults: dict[int, dict[str, Any]] = {}
        overrides = check.mapping(item.get("nodes"), [*path, "nodes"], set(map(str, (item.get("nodes") or {}))))
        for node_index, override in overrides.items():
            if isinstance(node_index, bool) or not isinstance(node_index, int) or not 1 <= node_index <= count:
                raise check.fail([*path, "nodes", node_index], f"must be a node index from 1 to {count}")
            body = check.mapping(override, [*path, "nodes", node_index], {"faults"})
            node_faults[node_index] = check.faults(body.get("faults"), [*path, "nodes", node_index, "faults"])
        pools.append(Pool(
            name=name, count=count, gpu=gpu, gpus_per_node=gpus, mig_config=mig_config, mig_devices=mig_devices,
            cpu=check.quantity(item.get("cpu", "64"), [*path, "cpu"]),
            memory=check.quantity(item.get("memory", "512Gi"), [*path, "memory"]),
            labels={str(k): str(v) for k, v in labels.items()},
            faults=NodeFaults().merged(faults), node_faults=node_faults,
        ))
    return Fleet(tuple(pools), Simulation(**sim_values), source)


def _validate_devices(check: _Validator, path: list[str | int], value: Any, gpu: GpuModel | None,
                      mig_config: Any) -> dict[str, int]:
    if mig_config is not None:
        raise check.fail(path, "give either mig_config or mig_devices, not both")
    if gpu is None or not gpu.mig_capable:
        raise check.fail(path, "only pools of MIG-capable GPUs take mig_devices")
    devices = check.mapping(value, path, set(map(str, value or {})))
    for profile, count in devices.items():
        check.integer(count, [*path, profile], 1, 64)
    result = {str(k): int(v) for k, v in devices.items()}
    problem = _boot_problem(check, path, gpu, 1, None, result)
    if problem:
        raise check.fail([*path, next(iter(devices), "")], problem)
    return result


def _boot_problem(check: _Validator, path: list[str | int], gpu: GpuModel, count: int, mig_config: str | None,
                  mig_devices: dict[str, int] | None) -> str:
    """Why nodes of this pool could not boot with this MIG layout, by NVIDIA's code ("" when they can)."""
    # Imported here: they need NVIDIA's components, most fleets do not.
    from simcluster import nvml_node
    from simcluster.sim import boot

    with tempfile.TemporaryDirectory(prefix="simcluster-boot-") as scratch:
        try:
            full = gpu_models.catalogue().get(gpu.key)
            real = nvml_node.for_cluster(Path(scratch))
            try:
                _booted, problem = boot.booted_gpus(full, count, mig_config, mig_devices, real, boot.validator())
            finally:
                real.close()
        except Exception as exc:  # not built, or the helper died: say what checking this field needs
            raise check.fail(path, f"checking it needs NVIDIA's mig-parted, the GPU-less NVML and MIG tables "
                                   f"({exc})") from None
    return problem


def load(path: str | Path | None = None) -> Fleet:
    file = Path(path) if path else DEFAULT_FLEET
    try:
        text = file.read_text()
    except OSError as exc:
        raise FleetError(f"{file}: cannot read the fleet file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else str(file)
        raise FleetError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return _validate(data, str(file), text)
