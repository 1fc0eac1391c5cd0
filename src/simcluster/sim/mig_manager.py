"""NVIDIA's k8s-mig-manager, simulated on every node that runs its pod.

The trigger is mig-parted's label protocol (``cmd/nvidia-mig-manager``): a run starts when the MIG
manager process starts (it applies the current ``nvidia.com/mig.config``) or when that label changes to
a new non-empty value; changes during a run collapse to the latest value; re-writing the same value
does nothing.

A run is the reconfigure sequence, one named step after another (``STEPS``), in the order of
``reconfigure-mig.sh`` (up to v0.12, what the pinned operator's chart deploys) and of its Go port
(v0.13+, ``pkg/mig/reconfigure``); where they differ the MIG manager's image tag decides:

  read-labels            the operand deploy labels and the state, as they are when the run starts
  load-config            the config file its pod reads (``mig_configs``)
  assert-valid-config    ``nvidia-mig-parted assert --valid-config`` (the real CLI): else ``failed``, no pending
  assert-applied         ``assert``: already applied -> ``success``, no GPU touched
  assert-mode            ``assert --mode-only``: a change is needed; after a reboot that did not take -> failed
  set-pending            ``nvidia.com/mig.config.state=pending``
  pause-operands         deploy labels ``paused-for-mig-change`` (a ``false`` stays ``false``; v0.13+: ``client``
                         only if present)
  wait-operands          one wait of up to 5 minutes per operand kind, in turn (device plugin, GFD, DCGM
                         exporter, DCGM; v0.15: DaemonSet pods selecting ``gpu.deploy.client``). A wait that
                         times out is ignored by the script; the Go port returns leaving ``pending`` (its bug)
  delete-validation-pods the CUDA and device-plugin validator pods
  apply-mode             ``apply --mode-only`` then ``assert --mode-only``; still wrong with ``WITH_REBOOT=true``:
                         ``rebooting`` and the node reboots; without it the run goes on (and the apply fails)
  apply-config           ``apply``: failed on error
  restart-validator      delete the operator validator pod
  restore-operands       deploy labels back from the values read at the start
  succeed                ``success``

Every ``nvidia-mig-parted`` command is NVIDIA's real binary, run on the node's GPUs through the GPU-less NVML
(``simcluster.nvml_node.RealMigParted``); the unit tests of this state machine pass the mirror
(``mig_parted.Mirrored``) instead.

Every exit (``failed`` or ``success``) rewrites the deploy labels from the values read at the start (``true``
unless it was ``false``) before the state, unless restore-operands already did: the script rewrites
device-plugin, GFD, DCGM exporter and DCGM (not nvsm), the Go port all it paused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simcluster.fleet import Simulation
from simcluster.sim import hardware, names
from simcluster.sim.faults import NodeFaults
from simcluster.sim.gpus import GpuModel
from simcluster.sim.hardware import Gpu
from simcluster.sim.mig_configs import GO_RECONFIGURE, WAITS_FOR_CLIENTS, MigConfigs, MigManagerPod
from simcluster.sim.view import Clock, NodeView, Wake, Writer

log = logging.getLogger("simcluster.mig-manager")

POD_WAIT_TIMEOUT_S = 300.0  # each of the manager's pod waits (kubectl wait --timeout=5m; the Go port's 5 min)
POD_POLL_S = 1.0
CLIENT_POLL_S = 5.0         # v0.15 polls the gpu.deploy.client DaemonSet pods every 5 s
OPERAND_WAITS = (names.APP_DEVICE_PLUGIN, names.APP_GFD, names.APP_DCGM_EXPORTER, names.APP_DCGM)
CLIENT_DAEMONSETS = "gpu.deploy.client DaemonSet pods"
SCRIPT_OPERANDS = ("device-plugin", "gpu-feature-discovery", "dcgm-exporter", "dcgm", "nvsm")
GO_OPERANDS = (*SCRIPT_OPERANDS, "client")


@dataclass
class Tools:
    """What a MIG manager needs from outside, passed in (the Simulator wires the real ones)."""

    writer: Writer
    clock: Clock
    wake: Wake
    settings: Simulation
    configs: MigConfigs
    validate: Callable[[str, str], tuple[bool, str]]  # nvidia-mig-parted assert --valid-config (document, config)
    # nvidia-mig-parted's GPU commands (assert_config, assert_mode, apply_mode, apply) on a node's GPUs:
    # nvml_node.RealMigParted, or mig_parted.Mirrored in unit tests
    mig_parted: Any
    reboot: Callable[[str], None]


@dataclass
class Run:
    config: str
    started: float
    step: int = 0
    start_labels: dict[str, str | None] = field(default_factory=dict)
    start_state: str = ""
    document: str = ""
    wait_index: int = 0
    wait_started: float | None = None
    apply_at: float | None = None
    restored: bool = False  # restore-operands ran: the exit writes only the state


@dataclass
class Context:
    """One step's world: the node as this reconcile sees it, the manager's pod and the tools."""

    view: NodeView
    manager: MigManagerPod
    model: GpuModel
    run: Run
    tools: Tools
    written: list[Gpu] | None = None  # GPUs this reconcile wrote (the view's node is the cache's: not edited)

    @property
    def name(self) -> str:
        return self.view.name

    @property
    def now(self) -> float:
        return self.tools.clock()

    @property
    def faults(self) -> NodeFaults:
        return NodeFaults.from_annotations(hardware.annotations_of(self.view.node))

    @property
    def go_port(self) -> bool:
        return self.manager.version >= GO_RECONFIGURE

    def gpus(self) -> list[Gpu]:
        return list(self.written) if self.written is not None else hardware.gpus(self.view.node)

    def set_gpus(self, gpus: list[Gpu]) -> None:
        self.tools.writer.patch_node_annotations(self.name, {hardware.GPU_STATE: hardware.encode(gpus)})
        self.written = list(gpus)

    def set_state(self, state: str) -> None:
        self.tools.writer.patch_node_labels(self.name, {names.MIG_CONFIG_STATE: state})


# -- step results ----------------------------------------------------------------------------------------------

NEXT = "next"
END = "end"  # the run stops without a state of its own (the node reboots)


@dataclass(frozen=True)
class Wait:
    seconds: float


@dataclass(frozen=True)
class Finish:
    state: str | None  # None: the run returns without setting a state (the Go port's pod-wait bug)
    reason: str


Result = str | Wait | Finish


# -- the steps ---------------------------------------------------------------------------------------------------

def operand_labels(go_port: bool) -> tuple[str, ...]:
    return GO_OPERANDS if go_port else SCRIPT_OPERANDS


def read_labels(ctx: Context) -> Result:
    labels = ctx.view.labels
    ctx.run.start_labels = {op: labels.get(names.DEPLOY_PREFIX + op) for op in operand_labels(ctx.go_port)}
    ctx.run.start_state = labels.get(names.MIG_CONFIG_STATE, "")
    return NEXT


def load_config(ctx: Context) -> Result:
    loaded = ctx.tools.configs.load(ctx.name, ctx.manager, ctx.model)
    if loaded.document is None:
        return Finish(names.FAILED, loaded.error)
    ctx.run.document = loaded.document
    return NEXT


def assert_valid_config(ctx: Context) -> Result:
    valid, message = ctx.tools.validate(ctx.run.document, ctx.run.config)
    if not valid:
        return Finish(names.FAILED, f"nvidia-mig-parted assert --valid-config: {message}")
    return NEXT


def _on_gpus(ctx: Context, gpus: list[Gpu] | None = None) -> tuple[Any, ...]:
    """What every mig-parted command is run with: the node, its GPUs and whether they are held, the file, the
    config, the node's fault knobs."""
    return (ctx.name, ctx.model, ctx.gpus() if gpus is None else gpus, ctx.view.gpu_in_use(), ctx.run.document,
            ctx.run.config, ctx.faults)


def assert_applied(ctx: Context) -> Result:
    if ctx.tools.mig_parted.assert_config(*_on_gpus(ctx)):
        return Finish(names.SUCCESS, "already applied")
    return NEXT


def assert_mode(ctx: Context) -> Result:
    if ctx.tools.mig_parted.assert_mode(*_on_gpus(ctx)):
        return NEXT
    if ctx.run.start_state == names.REBOOTING:
        return Finish(names.FAILED, "MIG mode change did not take effect after rebooting")
    return NEXT


def set_pending(ctx: Context) -> Result:
    ctx.set_state(names.PENDING)
    return NEXT


def pause_operands(ctx: Context) -> Result:
    pause: dict[str, str | None] = {}
    for operand, value in ctx.run.start_labels.items():
        if operand == "client" and value is None:
            continue  # the Go port touches gpu.deploy.client only where it exists
        pause[names.DEPLOY_PREFIX + operand] = "false" if value == "false" else names.PAUSED
    ctx.tools.writer.patch_node_labels(ctx.name, pause)
    if ctx.faults.stuck_pending:
        return Finish(None, "timed out waiting for operand pods; state left pending (mig-parted v0.15.0 bug)")
    if ctx.faults.stuck_pending_once:
        ctx.tools.writer.patch_node_annotations(ctx.name, {NodeFaults.annotation("stuck_pending_once"): None})
        return Finish(None, "timed out waiting for operand pods, once; state left pending (mig-parted v0.15.0 bug)")
    return NEXT


def _waiting_for(ctx: Context, kind: str) -> list[dict[str, Any]]:
    if kind == CLIENT_DAEMONSETS:
        return [pod for pod in ctx.view.pods
                if any(o.get("kind") == "DaemonSet" for o in pod["metadata"].get("ownerReferences") or [])
                and names.DEPLOY_PREFIX + "client" in (pod.get("spec", {}).get("nodeSelector") or {})]
    namespace = ctx.manager.clients_namespace
    return [pod for pod in ctx.view.pods if pod["metadata"].get("namespace") == namespace
            and (pod["metadata"].get("labels") or {}).get("app") == kind]


def wait_kinds(version: tuple[int, int, int]) -> tuple[str, ...]:
    return (*OPERAND_WAITS, CLIENT_DAEMONSETS) if version >= WAITS_FOR_CLIENTS else OPERAND_WAITS


def wait_operands(ctx: Context) -> Result:
    run, kinds = ctx.run, wait_kinds(ctx.manager.version)
    while run.wait_index < len(kinds):
        kind = kinds[run.wait_index]
        if run.wait_started is None:
            run.wait_started = ctx.now
        if not _waiting_for(ctx, kind):
            run.wait_index, run.wait_started = run.wait_index + 1, None
            continue
        if ctx.now - run.wait_started < POD_WAIT_TIMEOUT_S:
            return Wait(CLIENT_POLL_S if kind == CLIENT_DAEMONSETS else POD_POLL_S)
        if ctx.go_port:
            return Finish(None, f"timed out after {POD_WAIT_TIMEOUT_S:.0f} s waiting for {kind} pods to go; "
                                f"state left pending (mig-parted bug, fixed after v0.15.0)")
        log.info("node %s: %s pods still there after %.0f s; carrying on (kubectl wait's failure is ignored)",
                 ctx.name, kind, POD_WAIT_TIMEOUT_S)
        run.wait_index, run.wait_started = run.wait_index + 1, None
    return NEXT


def _delete_pods(ctx: Context, apps: tuple[str, ...]) -> None:
    namespace = ctx.manager.clients_namespace
    for pod in ctx.view.pods:
        meta = pod["metadata"]
        if meta.get("namespace") == namespace and (meta.get("labels") or {}).get("app") in apps \
                and not meta.get("deletionTimestamp"):
            ctx.tools.writer.delete_pod(pod, grace_seconds=None)


def delete_validation_pods(ctx: Context) -> Result:
    _delete_pods(ctx, (names.APP_CUDA_VALIDATOR, names.APP_PLUGIN_VALIDATOR))
    return NEXT


def apply_mode(ctx: Context) -> Result:
    outcome = ctx.tools.mig_parted.apply_mode(*_on_gpus(ctx))
    if outcome.gpus != ctx.gpus():
        ctx.set_gpus(outcome.gpus)
    if not outcome.ok:
        log.info("node %s: nvidia-mig-parted apply --mode-only: %s", ctx.name, outcome.message)
    if ctx.tools.mig_parted.assert_mode(*_on_gpus(ctx, outcome.gpus)):
        return NEXT
    if ctx.manager.with_reboot:
        ctx.set_state(names.REBOOTING)
        log.info("node %s: MIG mode change needs a reboot; rebooting", ctx.name)
        ctx.tools.reboot(ctx.name)
        return END
    log.info("node %s: MIG mode change pending a reboot (WITH_REBOOT is not true); carrying on", ctx.name)
    return NEXT


def apply_config(ctx: Context) -> Result:
    if ctx.run.apply_at is None:
        delay = ctx.faults.apply_delay_s
        ctx.run.apply_at = ctx.now + (delay if delay is not None else ctx.tools.settings.apply_delay_s)
    if ctx.now < ctx.run.apply_at:
        return Wait(ctx.run.apply_at - ctx.now)
    outcome = ctx.tools.mig_parted.apply(*_on_gpus(ctx))
    if outcome.gpus != ctx.gpus():
        ctx.set_gpus(outcome.gpus)
    if not outcome.ok:
        return Finish(names.FAILED, f"nvidia-mig-parted apply: {outcome.message}")
    return NEXT


def restart_validator(ctx: Context) -> Result:
    _delete_pods(ctx, (names.APP_OPERATOR_VALIDATOR,))
    return NEXT


def restored_labels(run: Run, operands: tuple[str, ...]) -> dict[str, str | None]:
    """maybe_set_true over the values read at the start: ``false`` stays, anything else becomes ``true``."""
    result: dict[str, str | None] = {}
    for operand in operands:
        if operand not in run.start_labels or (operand == "client" and run.start_labels[operand] is None):
            continue
        result[names.DEPLOY_PREFIX + operand] = "false" if run.start_labels[operand] == "false" else "true"
    return result


def restore_operands(ctx: Context) -> Result:
    ctx.tools.writer.patch_node_labels(ctx.name, restored_labels(ctx.run, operand_labels(ctx.go_port)))
    ctx.run.restored = True
    return NEXT


def succeed(ctx: Context) -> Result:
    return Finish(names.SUCCESS, f"applied in {ctx.now - ctx.run.started:.1f} s")


@dataclass(frozen=True)
class ApplyStage:
    """One stage of the MIG manager's apply, in the order the real one goes through them: its name (as the
    simulator logs it) and what it does."""

    name: str
    act: Callable[[Context], Result]


STEPS: tuple[ApplyStage, ...] = (
    ApplyStage("read-labels", read_labels),
    ApplyStage("load-config", load_config),
    ApplyStage("assert-valid-config", assert_valid_config),
    ApplyStage("assert-applied", assert_applied),
    ApplyStage("assert-mode", assert_mode),
    ApplyStage("set-pending", set_pending),
    ApplyStage("pause-operands", pause_operands),
    ApplyStage("wait-operands", wait_operands),
    ApplyStage("delete-validation-pods", delete_validation_pods),
    ApplyStage("apply-mode", apply_mode),
    ApplyStage("apply-config", apply_config),
    ApplyStage("restart-validator", restart_validator),
    ApplyStage("restore-operands", restore_operands),
    ApplyStage("succeed", succeed),
)


def exit_labels(ctx: Context) -> dict[str, str | None]:
    """What an exit rewrites before the state (nothing once restore-operands ran)."""
    if ctx.run.restored:
        return {}
    # reconfigure-mig.sh's __set_state_and_exit leaves nvsm out; the Go port restores all it paused.
    operands = GO_OPERANDS if ctx.go_port else SCRIPT_OPERANDS[:4]
    return restored_labels(ctx.run, operands)


# -- the process on each node ------------------------------------------------------------------------------------

class MigManager:
    def __init__(self, tools: Tools, catalogue_get: Callable[[str], GpuModel | None],
                 boot_epoch: Callable[[str], int]):
        self.tools = tools
        self.model_of = catalogue_get
        self.boot_epoch = boot_epoch
        self.runs: dict[str, Run] = {}
        self.process: dict[str, str] = {}   # node -> identity of the running manager process
        self.observed: dict[str, str] = {}  # node -> label value last seen
        self.wanted: dict[str, str] = {}    # node -> value a change asked for, not yet run

    # -- triggering ------------------------------------------------------------------------------------------

    def reconcile(self, view: NodeView) -> None:
        name = view.name
        pod = view.running_operand(names.APP_MIG_MANAGER)
        key = hardware.model_key(view.node)
        model = self.model_of(key) if key else None
        if pod is None or model is None:
            # No MIG manager process on the node: a run in flight dies with it.
            for table in (self.runs, self.process, self.wanted):
                table.pop(name, None)
            self.tools.configs.forget(name)
            return
        identity = f"{pod['metadata']['uid']}/{self.boot_epoch(name)}"
        label = view.labels.get(names.MIG_CONFIG, "")
        if self.process.get(name) != identity:
            # A (re)started manager applies the current label, whatever happened before.
            self.process[name] = identity
            self.runs.pop(name, None)
            self.observed[name] = label
            if label:
                self.wanted[name] = label
        elif label != self.observed.get(name):
            self.observed[name] = label
            if label:
                self.wanted[name] = label

        run = self.runs.get(name)
        if run is None:
            config = self.wanted.pop(name, None)
            if not config:
                return
            run = self.runs[name] = Run(config, self.tools.clock())
        self.advance(Context(view, MigManagerPod.of(pod), model, run, self.tools))

    def advance(self, ctx: Context) -> None:
        """Run the steps from where the run is until one waits or the run ends."""
        run = ctx.run
        while run.step < len(STEPS):
            result = STEPS[run.step].act(ctx)
            if result == NEXT:
                run.step += 1
                continue
            if isinstance(result, Wait):
                self.tools.wake(ctx.name, result.seconds)
                return
            if isinstance(result, Finish):
                self._finish(ctx, result)
            else:  # END
                self.runs.pop(ctx.name, None)
            return

    def _finish(self, ctx: Context, result: Finish) -> None:
        name = ctx.name
        if result.state is not None:
            restore = exit_labels(ctx)
            if restore:
                self.tools.writer.patch_node_labels(name, restore)
            ctx.set_state(result.state)
        log.info("node %s: mig config %s -> %s at %s: %s", name, ctx.run.config, result.state or "(no state)",
                 STEPS[min(ctx.run.step, len(STEPS) - 1)].name, result.reason)
        self.runs.pop(name, None)
        if self.wanted.get(name) == ctx.run.config:
            # Set() to the value just applied while it ran: Get() would not return it again.
            self.wanted.pop(name, None)
        if self.wanted.get(name):
            self.tools.wake(name, 0)
