"""``simcluster``: a local GPU cluster whose Kubernetes parts are real.

    simcluster up [--fleet FILE] [--nodes N] [--port PORT] [--without-operator]
                  [--real-operator | --simulated-operator] [--without-nfd] [--fresh]
    simcluster env | status | down | build | bin-dir | models
    simcluster logs NAMESPACE/POD [-c CONTAINER] [--previous]
    simcluster path bin-dir|chart|operator|mig-parted|mig-parted-systemd|mig-oracle|assets|manifests|nvml|
                    device-plugin-probe
    simcluster nvml init|show|reboot|hold|release|exec --state FILE ...   (a GPU host for the GPU-less NVML)
    simcluster hosts up [--fleet FILE] [--slurm] | inventory | down    (bare-metal test hosts over SSH)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from migrollout.kube import Connection, KubeClient, KubeError
from simcluster import (
    binaries,
    certs,
    device_plugin_build,
    identities,
    nvml_build,
    nvml_cli,
    operator_install,
    upstream,
)
from simcluster import fleet as fleet_file
from simcluster.controlplane import (
    ClusterError,
    ClusterState,
    ControlPlane,
    free_port,
    port_in_use,
    state_dir,
)
from simcluster.hosts import cli as hosts_cli
from simcluster.hosts import deployment as hosts_deployment
from simcluster.sim import containers, gpus, names, netns
from simcluster.sim.simulator import REAL, SIMULATED

DEFAULT_PORT = 6443
# Who runs the GPU Operator's controller when `up` is not told (nor $SIMCLUSTER_OPERATOR): NVIDIA's own.
# The simulated controller is for scale runs that opt in (--simulated-operator).
DEFAULT_OPERATOR = REAL


def _client(state: ClusterState) -> KubeClient:
    return KubeClient.connect(Connection(kubeconfig=state.kubeconfig), request_timeout=30)


def _api_ready(state: ClusterState) -> bool:
    try:
        return _client(state).request("GET", "/readyz", timeout=5) == "ok"
    except KubeError:
        return False


def _settled(api: KubeClient, expected: set[str], with_operator: bool) -> str:
    """What the cluster still lacks before tests can use it ("" when settled)."""
    listed, _ = api.list("/api/v1/nodes", what="list nodes")
    present = {node["metadata"]["name"]: node for node in listed}
    missing = expected - set(present)
    if missing:
        return f"{len(missing)} of {len(expected)} nodes not registered yet"
    not_ready = [name for name in expected if not _node_ready(present[name])]
    if not_ready:
        return f"{len(not_ready)} nodes not Ready or still tainted not-ready (e.g. {sorted(not_ready)[0]})"
    if not with_operator:
        return ""
    policies, _ = api.list(names.POLICY_PATH, what="list ClusterPolicies")
    if not policies or (policies[0].get("status") or {}).get("state") != "ready":
        return "ClusterPolicy not ready"
    for name in sorted(expected):
        node_labels = present[name]["metadata"].get("labels") or {}
        if not any(node_labels.get(key) == "true" for key in names.NFD_NVIDIA_PCI):
            continue
        if names.GPU_PRODUCT not in node_labels:
            return f"node {name}: GPU feature discovery has not labelled it yet"
        if node_labels.get(names.MIG_CAPABLE) == "true" and node_labels.get(names.MIG_CONFIG_STATE) != "success":
            return f"node {name}: MIG manager has not reported success yet"
        allocatable = present[name].get("status", {}).get("allocatable") or {}
        if not any(k.startswith("nvidia.com/") and v not in ("0", 0) for k, v in allocatable.items()):
            return f"node {name}: the device plugin advertises no GPUs yet"
    return ""


def _node_ready(node: dict) -> bool:
    """Ready, and the node-lifecycle controller has lifted its not-ready taint."""
    tainted = any(t.get("key") == "node.kubernetes.io/not-ready" for t in node.get("spec", {}).get("taints") or [])
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in node.get("status", {}).get("conditions") or [])
    return ready and not tainted


def cmd_up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    directory = state_dir(args.state_dir)
    if args.fresh:
        _remove(directory, "up --fresh")
    existing = ClusterState.load(directory)
    if existing is not None and existing.commands and not existing.settled_at:
        # A first `up` that failed or was interrupted (its processes stopped): nothing ran on it, nothing to keep.
        # (A state without commands is an older simcluster's, which did not record settling: _restart says so.)
        print(f"simcluster: the cluster in {directory} never finished starting; starting a new one")
        _remove(directory, "up")
        existing = None
    if existing is not None:
        return _restart(existing, args, started)
    return _start(directory, args, started)


def _start(directory: Path, args: argparse.Namespace, started: float) -> int:
    fleet = fleet_file.load(args.fleet)  # bad fleet files fail here, before anything starts
    if args.nodes:
        fleet = fleet.scaled(args.nodes)
    port = args.port if args.port is not None else DEFAULT_PORT
    if port == 0:
        port = free_port()
    elif port_in_use(port):
        raise ClusterError(f"port {port} is in use on 127.0.0.1 (another cluster? run 'simcluster down' "
                           f"or choose one with --port)")
    operator = _operator_mode(args)
    # The simulated node agents judge MIG configs with NVIDIA's own mig-parted in every mode.
    nvidia = _real_operator_prerequisites() if operator == REAL else upstream.build()
    built = binaries.build()
    directory.mkdir(parents=True, exist_ok=True)
    state = ClusterState(str(directory), port, free_port(), free_port(), free_port(), free_port(),
                         str(built.directory), fleet=fleet.source, with_operator=not args.without_operator,
                         started_at=time.time(), operator=operator,
                         fleet_file=str(Path(args.fleet).resolve()) if args.fleet else "", nodes=args.nodes,
                         nfd=not args.without_nfd)
    state.save()
    control_plane = ControlPlane(state, built)
    try:
        control_plane.write_credentials()
        control_plane.start()
        identities.ensure(_client(state), state)
        command = [sys.executable, "-m", "simcluster.daemon", f"--kubeconfig={state.kubeconfig}",
                   f"--status-file={directory / 'simulator-status.json'}"]
        if args.fleet:
            command.append(f"--fleet={state.fleet_file}")
        if args.nodes:
            command.append(f"--nodes={args.nodes}")
        command += [f"--operator={operator}", f"--state-dir={directory}"]
        control_plane.spawn("simulator", command, restart_args=command)
        installed_at = None
        if not args.without_operator:
            # NVIDIA's chart in both modes (the simulated controller reconciles the chart's own ClusterPolicy), as
            # an admin installs it: on a cluster whose nodes are all up.
            _wait_settled(state, fleet, False, control_plane, args.timeout)
            installed_at = time.time()
            _install_real_operator(state, built, nvidia.chart, fleet, nfd=not args.without_nfd)
        _wait_settled(state, fleet, not args.without_operator, control_plane, args.timeout)
    except BaseException:
        control_plane.stop()
        raise
    state.settled_at = time.time()
    state.save()
    gpu_nodes = sum(1 for node in fleet.nodes() if node.gpu)
    operator_text = _operator_summary(state, args, installed_at)
    print(f"simcluster: up in {time.monotonic() - started:.1f} s at {state.server}: "
          f"{len(fleet.nodes())} nodes ({gpu_nodes} with GPUs); {operator_text}")
    print(f"export KUBECONFIG={state.kubeconfig}")
    return 0


def _restart(state: ClusterState, args: argparse.Namespace, started: float) -> int:
    """`up` on an existing cluster: start again what stopped, keeping its state (etcd's data, certificates,
    ports, workloads); options that would make it another cluster are refused."""
    directory = state.path
    if certs.predates_strict_tls(directory / "pki"):
        print(f"simcluster: the certificates in {directory / 'pki'} lack the key identifiers strict TLS "
              f"verifiers (Python 3.13, openssl -x509_strict) require; 'simcluster up --fresh' issues new ones",
              file=sys.stderr)
    conflicts = _conflicts(state, args)
    if conflicts:
        raise ClusterError(f"the cluster in {directory} runs with other settings ({'; '.join(conflicts)}); "
                           f"'simcluster up' keeps a cluster as it is: drop those options, or replace it with "
                           f"'simcluster up --fresh'")
    if all(state.alive().values()) and _api_ready(state):
        print(f"simcluster: already up at {state.server} ({directory})")
        print(f"export KUBECONFIG={state.kubeconfig}")
        return 0
    if not state.commands:
        raise ClusterError(f"the cluster in {directory} was started by an older simcluster that did not record "
                           f"how to restart it; replace it with 'simcluster up --fresh'")
    built = binaries.Binaries(Path(state.binaries))
    if not built.complete:
        raise ClusterError(f"the binaries this cluster runs are gone from {built.directory}; replace the cluster "
                           f"with 'simcluster up --fresh'")
    fleet = fleet_file.load(state.fleet_file or None)
    if state.nodes:
        fleet = fleet.scaled(state.nodes)
    control_plane = ControlPlane(state, built)
    restarted = control_plane.restart_stopped()
    simulator_since = 0.0
    if not state.running("simulator"):
        simulator_since = time.time()
        control_plane.spawn("simulator", state.commands["simulator"])
        restarted.append("simulator")
    identities.ensure(_client(state), state)
    _wait_settled(state, fleet, state.with_operator, control_plane, args.timeout, simulator_since)
    print(f"simcluster: restarted {', '.join(restarted) or 'nothing (every process was running)'} in "
          f"{time.monotonic() - started:.1f} s at {state.server}; its state is kept ({directory})")
    print(f"export KUBECONFIG={state.kubeconfig}")
    return 0


def _conflicts(state: ClusterState, args: argparse.Namespace) -> list[str]:
    """The options of this `up` that ask for a cluster other than the one in the state directory."""
    found = []
    if args.fleet and str(Path(args.fleet).resolve()) != state.fleet_file:
        found.append(f"--fleet {args.fleet}: it runs {state.fleet_file or 'the built-in fleet'}")
    if args.nodes and args.nodes != state.nodes:
        found.append(f"--nodes {args.nodes}: it runs {state.nodes or 'the fleet as written'}")
    if args.port and args.port != state.api_port:  # --port 0 (any free port) accepts the one it has
        found.append(f"--port {args.port}: it listens on {state.api_port}")
    if args.real_operator and state.operator != REAL:
        found.append("--real-operator: it runs the simulated operator")
    if args.simulated_operator and state.operator != SIMULATED:
        found.append("--simulated-operator: it runs NVIDIA's operator")
    if args.without_operator and state.with_operator:
        found.append("--without-operator: it was started with the operator")
    if args.without_nfd and state.nfd and state.with_operator and state.operator == REAL:
        found.append("--without-nfd: its operator was installed with NFD")
    return found


def _remove(directory: Path, why: str) -> None:
    """Stop every process of the cluster in ``directory`` and delete its state."""
    state = ClusterState.load(directory) if (directory / "state.json").exists() else None
    stopped = ControlPlane(state, binaries.Binaries(Path(state.binaries))).stop() if state else []
    if directory.exists():
        shutil.rmtree(directory, ignore_errors=True)
        print(f"simcluster {why}: stopped {', '.join(stopped) or 'nothing (no process was running)'}; "
              f"removed {directory}")


def _operator_mode(args: argparse.Namespace) -> str:
    if args.real_operator:
        return REAL
    if args.simulated_operator:
        return SIMULATED
    chosen = os.environ.get("SIMCLUSTER_OPERATOR", DEFAULT_OPERATOR)
    if chosen not in (REAL, SIMULATED):
        raise ClusterError(f"SIMCLUSTER_OPERATOR={chosen}: say {REAL} or {SIMULATED}")
    return chosen


def _real_operator_prerequisites() -> upstream.Upstream:
    """Fail before anything starts when NVIDIA's operator cannot run here; build it when missing."""
    problem = netns.preflight()
    if problem:
        raise ClusterError(f"{problem}; run simcluster as root, or use --simulated-operator")
    return upstream.build()


def _install_real_operator(state: ClusterState, built: binaries.Binaries, chart: Path, fleet: fleet_file.Fleet,
                           nfd: bool) -> None:
    try:
        operator_install.helm_install(built.path("helm"), state.kubeconfig, chart,
                                      fleet.simulation.operator_namespace, nfd=nfd)
    except operator_install.InstallError as exc:
        raise ClusterError(str(exc)) from None


def _operator_summary(state: ClusterState, args: argparse.Namespace, installed_at: float | None) -> str:
    if not state.with_operator:
        return "no GPU Operator (install it with playbooks/nvidia-gpu-operator.yml)"
    ready = operator_install.ready_since(_client(state))
    took = f", ClusterPolicy ready {ready - installed_at:.0f} s after helm install" \
        if ready is not None and installed_at is not None else ""
    controller = "its controller simulated, " if state.operator == SIMULATED else ""
    return (f"NVIDIA's GPU Operator {upstream.OPERATOR_VERSION} installed from its chart "
            f"({controller}strategy {operator_install.STRATEGY}{', no NFD' if args.without_nfd else ''}{took})")


def _simulator_started(state: ClusterState, since: float) -> bool:
    """Whether the simulator started at ``since`` (a time.time()) has registered its nodes: it reports so in its
    status file. Until then an API server outage would meet it in its start-up."""
    try:
        status = json.loads((Path(state.directory) / "simulator-status.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(status.get("registered")) and float(status.get("time") or 0) >= since


def _wait_settled(state: ClusterState, fleet: fleet_file.Fleet, with_operator: bool, control_plane: ControlPlane,
                  timeout: float, simulator_since: float = 0.0) -> None:
    """Wait until every node is Ready (and, with an operator, labelled and advertising its GPUs); and, when the
    simulator was (re)started at ``simulator_since``, until it reports its nodes registered."""
    api = _client(state)
    expected = {node.name for node in fleet.nodes()}
    interval = 0.5 if len(expected) < 100 else 3.0
    deadline = time.monotonic() + timeout
    lacking = "not checked yet"
    while time.monotonic() < deadline:
        if not state.running("simulator"):
            raise control_plane.fail("simulator", "exited during start-up")
        try:
            lacking = _settled(api, expected, with_operator)
        except KubeError as exc:
            lacking = exc.one_line()
        if not lacking and simulator_since and not _simulator_started(state, simulator_since):
            lacking = "the simulator has not registered its nodes yet"
        if not lacking:
            return
        time.sleep(interval)
    raise ClusterError(f"the cluster did not settle within {timeout:.0f} s: {lacking} "
                       f"(logs in {Path(state.directory) / 'logs'})")


def cmd_logs(args: argparse.Namespace) -> int:
    """A container's output, kept by the simulated kubelet for every pod that runs for real."""
    directory = state_dir(args.state_dir)
    state = ClusterState.load(directory)
    if state is None:
        raise ClusterError(f"no cluster in {directory}; start one with 'simcluster up'")
    namespace, _, name = args.pod.rpartition("/")
    namespace = namespace or "default"
    pod = None
    if _api_ready(state):
        pod = _client(state).get_or_none(f"/api/v1/namespaces/{namespace}/pods/{name}")
    uid = pod["metadata"]["uid"] if pod else None
    files = containers.log_files(directory / "kubelet", namespace, name, uid)
    if not files:
        if pod is not None:
            raise ClusterError(f"pod {namespace}/{name} is simulated: it runs no process and has no logs")
        raise ClusterError(f"no pod {namespace}/{name} (and no logs of one)")
    if args.container is None and len(files) > 1:
        raise ClusterError(f"pod {namespace}/{name} has containers {', '.join(files)}: choose one with -c")
    container = args.container or next(iter(files))
    runs = files.get(container)
    if runs is None:
        raise ClusterError(f"pod {namespace}/{name} has no container {container} that ran "
                           f"(containers: {', '.join(files)})")
    if args.previous and len(runs) < 2:
        raise ClusterError(f'previous terminated container "{container}" in pod "{name}" not found')
    sys.stdout.write(runs[-2 if args.previous else -1].read_text(errors="replace"))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    directory = state_dir(args.state_dir)
    if not (directory / "state.json").exists():
        print(f"simcluster: nothing to stop ({directory} holds no cluster)")
        shutil.rmtree(directory, ignore_errors=True)
        return 0
    _remove(directory, "down")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    directory = state_dir(args.state_dir)
    state = ClusterState.load(directory)
    if state is None:
        raise ClusterError(f"no cluster in {directory}; start one with 'simcluster up'")
    print(f"export KUBECONFIG={state.kubeconfig}")
    print(f"export SIMCLUSTER_OPERATOR_KUBECONFIG={state.operator_kubeconfig}")
    print(f"export SIMCLUSTER_EXEC_KUBECONFIG={state.exec_kubeconfig}")
    print(f'export PATH="{state.binaries}:$PATH"')
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    directory = state_dir(args.state_dir)
    state = ClusterState.load(directory)
    if state is None:
        print(f"simcluster: down ({directory} holds no cluster)")
        return 3
    alive = state.alive()
    for name, running in alive.items():
        print(f"{name:<24} {'running' if running else 'STOPPED'} (pid {state.pids[name]})")
    if not all(alive.values()) or not _api_ready(state):
        print("simcluster: degraded; 'simcluster up' restarts what stopped and keeps the cluster's state")
        return 1
    api = _client(state)
    version = api.get("/version").get("gitVersion")
    listed, _ = api.list("/api/v1/nodes")
    ready = sum(1 for node in listed if _node_ready(node))
    print(f"API server {state.server} ({version}); nodes: {ready}/{len(listed)} Ready")
    try:
        policies, _ = api.list(names.POLICY_PATH)
    except KubeError:
        policies = []
    if policies:
        policy = policies[0]
        print(f"ClusterPolicy {policy['metadata']['name']}: {policy.get('status', {}).get('state', 'unknown')}, "
              f"MIG strategy {(policy.get('spec') or {}).get('mig', {}).get('strategy') or 'none (unset)'}")
    else:
        print("ClusterPolicy: none (GPU Operator not installed)")
    print(f"GPU Operator controller: {'NVIDIA' if state.operator == REAL else 'simulated'}")
    print(f"kubeconfig: {state.kubeconfig} (admin); {state.operator_kubeconfig} "
          f"({identities.USERNAME}, token); {state.exec_kubeconfig} (the same, exec plugin)")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    built = binaries.build()
    version = subprocess.run([built.path("kube-apiserver"), "--version"], capture_output=True, text=True)
    print(f"simcluster: binaries in {built.directory} ({version.stdout.strip()}, helm v{binaries.HELM_VERSION}, "
          f"etcd v{binaries.ETCD_VERSION})")
    nvidia = upstream.build()
    print(f"simcluster: NVIDIA components in {nvidia.directory} (gpu-operator {upstream.OPERATOR_VERSION}, "
          f"mig-parted {upstream.MIG_PARTED_VERSION} with go-nvlib {upstream.GO_NVLIB_VERSION}, "
          f"go-nvml {upstream.GO_NVML_VERSION})")
    print(f"simcluster: GPU-less NVML in {nvml_build.build() / nvml_build.LIBRARY_NAME}")
    print(f"simcluster: NVIDIA's device plugin, probed, in {device_plugin_build.build()} "
          f"(k8s-device-plugin {device_plugin_build.DEVICE_PLUGIN_VERSION})")
    return 0


PATHS = {
    "bin-dir": lambda: binaries.build().directory,
    "chart": lambda: upstream.build().chart,
    "operator": lambda: upstream.build().operator,
    "mig-parted": lambda: upstream.build().mig_parted,
    "mig-oracle": lambda: upstream.build().mig_oracle,
    "assets": lambda: upstream.build().assets,
    "manifests": lambda: upstream.build().manifests,
    "nvml": lambda: nvml_build.build() / nvml_build.LIBRARY_NAME,
    "device-plugin-probe": lambda: device_plugin_build.build(),
    "mig-parted-systemd": lambda: hosts_deployment.systemd_dir(),
}


def cmd_path(args: argparse.Namespace) -> int:
    """Print where a built component is (building it first if needed)."""
    print(PATHS[args.name]())
    return 0


def cmd_bin_dir(args: argparse.Namespace) -> int:
    """Print the directory of kubectl, helm and the control plane (building them first if needed)."""
    print(binaries.build().directory)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """The simulated GPU models a fleet file may name, and where their MIG facts come from."""
    sources = {"recorded": "MIG: go-nvml's recorded table", "documented": "MIG: the MIG user guide", "": "no MIG"}
    for model in gpus.described().models:
        print(f"{model.key:<16} {model.product:<44} {model.device_id}  {sources[model.mig]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simcluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", help="where the cluster keeps its state (default: $SIMCLUSTER_DIR or "
                                            "~/.local/state/simcluster/default)")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the cluster, or restart what stopped of it, keeping its state")
    up.add_argument("--fleet", help="fleet file (default: the built-in small fleet)")
    up.add_argument("--nodes", type=int, help="scale the fleet to this many nodes in all")
    up.add_argument("--port", type=int, help=f"API server port (default {DEFAULT_PORT}; 0 picks a free one)")
    up.add_argument("--without-operator", action="store_true",
                    help="do not install the GPU Operator (no ClusterPolicy)")
    who = up.add_mutually_exclusive_group()
    who.add_argument("--real-operator", action="store_true",
                     help="NVIDIA's GPU Operator: its chart installed with helm, its controller run for real"
                          + (" (the default)" if DEFAULT_OPERATOR == REAL else ""))
    who.add_argument("--simulated-operator", action="store_true",
                     help="the simulated operator controller (for scale runs; every pod simulated)"
                          + (" (the default)" if DEFAULT_OPERATOR == SIMULATED else ""))
    up.add_argument("--without-nfd", action="store_true",
                    help="install the real operator's chart without node-feature-discovery (scale runs)")
    up.add_argument("--timeout", type=float, default=600, help="seconds to wait for the cluster to settle")
    up.add_argument("--fresh", action="store_true",
                    help="replace the cluster in the state directory (its processes stopped, its state deleted)")
    up.set_defaults(func=cmd_up)
    for name, func, text in (("down", cmd_down, "stop every process and remove the state"),
                             ("env", cmd_env, "print shell exports for the cluster"),
                             ("status", cmd_status, "show what runs"),
                             ("build", cmd_build, "build the control-plane binaries and NVIDIA's components"),
                             ("bin-dir", cmd_bin_dir, "print the directory of kubectl and helm"),
                             ("models", cmd_models, "list the simulated GPU models a fleet may name")):
        commands.add_parser(name, help=text).set_defaults(func=func)
    logs = commands.add_parser("logs", help="print the output of a container that runs for real")
    logs.add_argument("pod", help="NAMESPACE/POD")
    logs.add_argument("-c", "--container", help="the container (needed when the pod has several)")
    logs.add_argument("-p", "--previous", action="store_true", help="the run before the current one")
    logs.set_defaults(func=cmd_logs)
    path = commands.add_parser("path", help="print where a built component is (bin-dir, chart, operator, ...)")
    path.add_argument("name", choices=sorted(PATHS))
    path.set_defaults(func=cmd_path)
    nvml_cli.add_commands(commands)
    hosts_cli.add_commands(commands)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ClusterError, fleet_file.FleetError, binaries.BuildError, KubeError, *hosts_cli.ERRORS) as exc:
        print(f"simcluster: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("simcluster: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
