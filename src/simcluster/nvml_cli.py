"""``simcluster nvml ...``: one GPU host's state file, served to NVIDIA's mig-parted by the GPU-less NVML.

    simcluster nvml init --state FILE --gpu MODEL --count N
    simcluster nvml show --state FILE [--json]
    simcluster nvml reboot --state FILE
    simcluster nvml hold --state FILE --gpu INDEX [--client TEXT]     (a process holds the GPU: resets fail)
    simcluster nvml release --state FILE [--gpu INDEX]
    simcluster nvml exec --state FILE -- COMMAND [ARGS...]             (COMMAND sees the host: NVML, PCI, nvidia-smi)
    simcluster [--state-dir DIR] nvml state NODE [--hosts-dir DIR] [--write FILE]
                                       (a simulated node's GPUs as a host state, or a running test host's)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from simcluster import nvml, nvml_build
from simcluster.binaries import BuildError


def _state(args: argparse.Namespace) -> Path:
    return Path(args.state).resolve()


def cmd_init(args: argparse.Namespace) -> int:
    data = nvml.init(_state(args), args.gpu, args.count)
    print(nvml.describe(data))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    data = nvml.load(_state(args))
    print(json.dumps(data, indent=2) if args.json else nvml.describe(data))
    return 0


def cmd_reboot(args: argparse.Namespace) -> int:
    nvml.reboot(_state(args))
    print(nvml.describe(nvml.load(_state(args))))
    return 0


def cmd_hold(args: argparse.Namespace) -> int:
    nvml.hold(_state(args), args.gpu, args.client)
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    nvml.release(_state(args), args.gpu)
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    nvml.load(_state(args))  # a clear error before anything is mounted
    nvml.exec_on_host(_state(args), command, nvml_build.build())
    return 127  # not reached: exec_on_host replaces this process


def cmd_state(args: argparse.Namespace) -> int:
    """The simulated cluster's node NODE as a host state: the one its MIG manager runs NVIDIA's mig-parted on
    (its UUIDs), holding the node's GPUs as they are now. Or a running test host NODE's own state file
    (``simcluster hosts``): with ``--hosts-dir``, or when no cluster is in the state dir."""
    from migrollout.kube import Connection, KubeClient, KubeError
    from simcluster import nvml_node
    from simcluster.controlplane import ClusterState, state_dir
    from simcluster.hosts import hostset
    from simcluster.sim import hardware

    directory = state_dir(args.state_dir)
    cluster = ClusterState.load(directory)
    hosts_dir = Path(args.hosts_dir).resolve() if args.hosts_dir else hostset.default_state_dir()
    host_state = hostset.gpu_state_file(hosts_dir, args.node) if args.hosts_dir or cluster is None else None
    if host_state is not None:
        return _show_state(args, nvml.load(host_state))
    if cluster is None:
        raise nvml.NvmlError(f"no cluster in {directory} and no running test host {args.node} in {hosts_dir}; "
                             "start one with 'simcluster up' or 'simcluster hosts up'")
    try:
        node = KubeClient.connect(Connection(kubeconfig=cluster.kubeconfig), request_timeout=30).get(
            f"/api/v1/nodes/{args.node}", f"node {args.node}")
    except KubeError as exc:
        raise nvml.NvmlError(f"{exc} (and no running test host {args.node} in {hosts_dir})") from None
    model = hardware.model_key(node)
    if model is None or hardware.gpu_count(node) == 0:
        raise nvml.NvmlError(f"node {args.node} has no simulated GPUs")
    # The host its MIG manager runs mig-parted on keeps the UUIDs; the node's GPUs are what they are now
    # (a reboot since the last mig-parted call may have changed them).
    kept = directory / "nvml" / f"{args.node}.json"
    data = nvml_node.host_state(model, hardware.gpus(node), previous=nvml.load(kept) if kept.exists() else None)
    return _show_state(args, data)


def _show_state(args: argparse.Namespace, data: dict) -> int:
    if args.write:
        target = Path(args.write).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        with nvml.locked(target):
            nvml.save(target, data)
        nvml.prepare_host(target, data)
        print(f"simcluster nvml: wrote {target}; run commands on it with {nvml.run_script(target)} COMMAND")
    print(json.dumps(data, indent=2) if args.json else nvml.describe(data))
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("nvml", help="a GPU host's state for the GPU-less NVML (init, show, reboot, exec)",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = group.add_subparsers(dest="nvml_command", required=True)

    def verb(name: str, func, text: str) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, help=text)
        parser.add_argument("--state", required=True, help="the host's state file")
        parser.set_defaults(func=lambda args: _guarded(func, args))
        return parser

    init = verb("init", cmd_init, "create the state of a host with COUNT GPUs of MODEL (MIG disabled)")
    init.add_argument("--gpu", required=True, help="the GPU model, as 'simcluster models' lists it")
    init.add_argument("--count", type=int, default=1, help="how many GPUs (1 to 16; default 1)")
    show = verb("show", cmd_show, "print the host's GPUs, MIG modes and instances")
    show.add_argument("--json", action="store_true", help="the state file itself")
    verb("reboot", cmd_reboot, "reboot the host (A100/A30: pending MIG modes apply; H100 on: MIG mode lost)")
    hold = verb("hold", cmd_hold, "fault knob: a process holds a GPU (its reset is refused)")
    hold.add_argument("--gpu", type=int, required=True, help="the GPU index")
    hold.add_argument("--client", default="pid 4242 (simulated GPU client)", help="how the holder is described")
    release = verb("release", cmd_release, "no process holds the GPU (or any GPU) any more")
    release.add_argument("--gpu", type=int, help="the GPU index (default: every GPU)")
    run = verb("exec", cmd_exec, "run a command that sees the host: this NVML, its PCI tree and nvidia-smi")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    state = verbs.add_parser("state", help="a node of the simulated cluster (--state-dir) as a host state")
    state.add_argument("node", help="the node's name, or a running test host's (simcluster hosts)")
    state.add_argument("--hosts-dir", help="look for NODE among the test hosts running from this directory first "
                                           "(without it: the default one, when no cluster is in the state dir)")
    state.add_argument("--write", metavar="FILE", help="also write it as a host state file (and its host view)")
    state.add_argument("--json", action="store_true", help="print the state file itself")
    state.set_defaults(func=lambda args: _guarded(cmd_state, args))


def _guarded(func, args: argparse.Namespace) -> int:
    try:
        return func(args)
    except (nvml.NvmlError, BuildError) as exc:
        print(f"simcluster nvml: {exc}", file=sys.stderr)
        return 1
