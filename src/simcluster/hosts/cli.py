"""``simcluster hosts``: bare-metal GPU test hosts, each its own namespaces with a real sshd.

    simcluster hosts [--hosts-dir DIR] up [--fleet FILE] [--slurm]
    simcluster hosts [--hosts-dir DIR] inventory | down | status
    simcluster hosts [--hosts-dir DIR] ssh HOST [COMMAND...]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from simcluster.hosts import hostset


def _dir(args: argparse.Namespace) -> Path:
    return Path(args.hosts_dir).expanduser().resolve() if args.hosts_dir else hostset.default_state_dir()


def cmd_up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    hosts = hostset.up(_dir(args), args.fleet, args.slurm)
    print(f"simcluster hosts: {len(hosts)} hosts up in {time.monotonic() - started:.1f} s; "
          f"inventory: {hostset.write_inventory(_dir(args))}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    print("simcluster hosts: stopped" if hostset.down(_dir(args)) else "simcluster hosts: none running")
    return 0


def cmd_inventory(args: argparse.Namespace) -> int:
    print(hostset.write_inventory(_dir(args)))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    for host in hostset.load_plan(_dir(args)):
        print(f"{host.name:<24} {host.address:<16} {','.join(host.roles):<28} {host.gpu} x{host.gpu_count}")
    return 0


def cmd_ssh(args: argparse.Namespace) -> int:
    state = _dir(args)
    host = next((h for h in hostset.load_plan(state) if h.name == args.host), None)
    if host is None:
        raise hostset.HostsError(f"no test host {args.host}")
    command = hostset.ssh_command(state, host.name, host.address, *args.command)
    os.execvp(command[0], command)
    return 1


def add_commands(commands: argparse._SubParsersAction) -> None:
    hosts = commands.add_parser("hosts", help="bare-metal GPU test hosts reached over SSH (up, inventory, down)",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    hosts.add_argument("--hosts-dir", help="where the hosts keep their state (default: $SIMCLUSTER_HOSTS_DIR or "
                                           "~/.local/state/simcluster/hosts)")
    actions = hosts.add_subparsers(dest="hosts_command", required=True)
    up = actions.add_parser("up", help="start the hosts of a fleet (replacing those running)")
    up.add_argument("--fleet", help="fleet file (default: the built-in hosts fleet)")
    up.add_argument("--slurm", action="store_true", help="also run Slurm: a controller host, slurmd on each host")
    up.set_defaults(func=cmd_up)
    for name, func, text in (("down", cmd_down, "stop every host"),
                             ("inventory", cmd_inventory, "write the Ansible inventory (YAML) and print its path"),
                             ("status", cmd_status, "list the hosts")):
        actions.add_parser(name, help=text).set_defaults(func=func)
    ssh = actions.add_parser("ssh", help="run a command on a host over SSH (as Ansible connects)")
    ssh.add_argument("host")
    ssh.add_argument("command", nargs=argparse.REMAINDER)
    ssh.set_defaults(func=cmd_ssh)


ERRORS = (hostset.HostsError,)
