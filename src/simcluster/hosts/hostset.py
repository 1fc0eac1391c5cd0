"""A set of bare-metal test hosts: made from a fleet file, started, reached by Ansible over real SSH.

``up`` lays out each host's private directories under the state dir (``hosts/NAME/{etc,var,usr-local,
root,tmp}``: ``/etc`` starts as a copy of the machine's, with its own hostname, ``/etc/hosts``, sshd
configuration and host key, no apt source and no service enabled; ``hosts/NAME/overlay/{usr,dpkg}`` keep
what the host writes in its overlaid ``/usr`` and ``/var/lib/dpkg``), makes one SSH key for the set, starts the
supervisor (:mod:`simcluster.hosts.supervisor`), waits until every host answers over SSH with that key,
and writes the Ansible inventory. ``down`` stops the supervisor, which stops every host.

Addresses: 169.254.77.0/24 (link-local: never routed), on a bridge in a network namespace of the set's
own; the machine's network namespace gets no address, route or link. The control host reaches a host
through :mod:`simcluster.hosts.proxy` (SSH's ProxyCommand).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import yaml

from simcluster import fleet as fleet_file
from simcluster import nvml, nvml_build
from simcluster.hosts import gpus
from simcluster.hosts import slurm as slurm_files

SUBNET = "169.254.77"
PREFIX = 24
FIRST_HOST = 10
CONTROLLER = "slurm-controller"
HUB_ADDRESS = f"{SUBNET}.1"
CONTROLLER_ADDRESS = f"{SUBNET}.2"
GPU_STATE_MOUNT = "/var/lib/simcluster-gpu"
GPU_STATE_FILE = f"{GPU_STATE_MOUNT}/state.json"
# The GPU "driver" of a host: the GPU-less NVML's library and the nvidia-smi stand-in, bound where NVIDIA's
# driver container puts them (the dynamic loader finds the library through /etc/ld.so.conf.d).
DRIVER_DIR = "/usr/local/nvidia"
HOST_PATH = f"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:{DRIVER_DIR}/bin"
SSH_READY_TIMEOUT_S = 60.0
DEFAULT_FLEET = Path(__file__).resolve().parent.parent / "fleets" / "hosts.yaml"
# Debian enables these units when their packages are installed; a test host starts with none enabled
# (its own sshd is started by its PID 1, Slurm's daemons only on the hosts that run them).
BOOT_UNITS_CLEARED = ("multi-user.target.wants",)


class HostsError(RuntimeError):
    pass


@dataclass
class Host:
    name: str
    address: str
    pool: str = ""
    gpu: str = ""
    gpu_count: int = 0
    faults: dict[str, Any] = field(default_factory=dict)
    roles: list[str] = field(default_factory=list)   # mig_host, slurm_node, slurm_controller


def default_state_dir() -> Path:
    if os.environ.get("SIMCLUSTER_HOSTS_DIR"):
        return Path(os.environ["SIMCLUSTER_HOSTS_DIR"]).expanduser().resolve()
    base = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    return base / "simcluster" / "hosts"


def group_name(pool: str) -> str:
    """A pool's inventory group (Ansible group names take no dashes)."""
    return "mig_pool_" + pool.replace("-", "_").replace(".", "_")


def plan(fleet: fleet_file.Fleet, slurm: bool) -> list[Host]:
    """The hosts of a fleet: one per fleet node (GPU pools only), plus Slurm's controller with ``slurm``."""
    hosts: list[Host] = []
    gpu_nodes = [node for node in fleet.nodes() if node.gpu is not None]
    if not gpu_nodes:
        raise HostsError(f"{fleet.source}: the fleet has no GPU pools: test hosts are GPU hosts")
    if len(gpu_nodes) > 240:
        raise HostsError(f"{fleet.source}: {len(gpu_nodes)} GPU hosts; at most 240 fit the hosts' subnet")
    if slurm:
        hosts.append(Host(CONTROLLER, CONTROLLER_ADDRESS, roles=["slurm_controller"]))
    for index, node in enumerate(gpu_nodes):
        assert node.gpu is not None
        roles = ["mig_host", *(["slurm_node"] if slurm else [])]
        faults = {key: value for key, value in vars(node.faults).items() if value}
        if gpus.unsupported(faults):
            raise HostsError(f"{fleet.source}: {node.name}: fault knobs {', '.join(gpus.unsupported(faults))} have no "
                             f"meaning on a test host (it acts on {', '.join(gpus.HOST_KNOBS)}); see docs/baremetal.md")
        hosts.append(Host(node.name, f"{SUBNET}.{FIRST_HOST + index}", node.pool, node.gpu.key, node.gpu_count,
                          faults, roles))
    return hosts


# -- layout -------------------------------------------------------------------------------------------------

SSHD_CONFIG = """\
# simcluster test host: key-only root login, the environment from ~/.ssh/environment.
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitUserEnvironment yes
AuthorizedKeysFile .ssh/authorized_keys
PidFile /run/sshd.pid
MaxStartups 200
MaxSessions 100
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def _run(command: list[str], what: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise HostsError(f"{what}: {done.stderr.strip() or done.stdout.strip() or done.returncode}")
    return done.stdout


def _layout_host(state: Path, host: Host, hosts: list[Host], public_key: str, extra_env: dict[str, str]) -> dict:
    root = state / "hosts" / host.name
    etc = root / "etc"
    shutil.copytree("/etc", etc, symlinks=True, ignore_dangling_symlinks=True)
    (etc / "hostname").write_text(f"{host.name}\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n" + "".join(f"{h.address} {h.name}\n" for h in hosts))
    for cleared in BOOT_UNITS_CLEARED:
        shutil.rmtree(etc / "systemd" / "system" / cleared, ignore_errors=True)
        (etc / "systemd" / "system" / cleared).mkdir(parents=True)
    ssh = etc / "ssh"
    for old in ssh.glob("ssh_host_*"):
        old.unlink()
    shutil.rmtree(ssh / "sshd_config.d", ignore_errors=True)
    (ssh / "sshd_config").write_text(SSHD_CONFIG)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{host.name}", "-f",
          str(ssh / "ssh_host_ed25519_key")], f"host {host.name}: ssh-keygen")
    # A test host reaches no package mirror: the machine's apt sources are not the host's (a package comes
    # from the repository the playbook names).
    for source in [etc / "apt" / "sources.list", *(etc / "apt" / "sources.list.d").glob("*")]:
        if source.is_file() or source.is_symlink():
            source.unlink()
    var = root / "var"
    for sub in ("lib", "log", "spool", "cache", "tmp", "lib/nvidia-mig-manager", GPU_STATE_MOUNT[5:], *APT_DIRS):
        (var / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(var / "tmp", 0o1777)
    (var / "run").symlink_to("../run")
    (var / "lock").symlink_to("../run/lock")
    (var / "lib" / "nvidia-mig-manager").rmdir()  # NVIDIA's layout makes it; the host starts without it
    for sub in ("bin", "sbin", "lib", "etc", "share"):
        (root / "usr-local" / sub).mkdir(parents=True)
    home = root / "root"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    os.chmod(home, 0o700)
    (home / ".ssh" / "authorized_keys").write_text(public_key)
    environment = {"PATH": HOST_PATH, "SIMCLUSTER_NVML_STATE": GPU_STATE_FILE, **extra_env}
    (etc / "environment").write_text("".join(f"{k}={v}\n" for k, v in environment.items()))
    (etc / "ld.so.conf.d" / "simcluster-nvml.conf").write_text(f"{DRIVER_DIR}/lib64\n")
    (home / ".ssh" / "environment").write_text("".join(f"{k}={v}\n" for k, v in environment.items()))
    for name in ("authorized_keys", "environment"):
        os.chmod(home / ".ssh" / name, 0o600)
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    (root / "boot_id").write_text("\n")
    gpu = root / "gpu"
    gpu.mkdir()
    binds = [*_python_binds(root), [str(state / "bin" / "systemctl"), "/usr/bin/systemctl"],
             [str(gpu), GPU_STATE_MOUNT]]
    on_boot: list[list[str]] = []
    on_reboot: list[list[str]] = []
    if host.gpu:
        view = gpus.init(gpu / "state.json", host.gpu, host.gpu_count, host.faults)
        for sub in ("bin", "lib64"):
            (root / "usr-local" / "nvidia" / sub).mkdir(parents=True)
        binds += [[str(view / "pci-devices"), "/sys/bus/pci/devices"],
                  [str(view / "bin"), f"{DRIVER_DIR}/bin"], [str(nvml_build.build()), f"{DRIVER_DIR}/lib64"]]
        on_boot.append(["ldconfig"])
        on_reboot.append([sys.executable, "-m", "simcluster.hosts.gpus", "reboot", GPU_STATE_FILE,  # the host's path
                          *(["--mode-change-fails"] if host.faults.get("reboot_fails") else [])])
    overlays = []
    for name, lower, target in (("usr", "/usr", "/usr"), ("dpkg", "/var/lib/dpkg", str(var / "lib" / "dpkg"))):
        for part in ("upper", "work"):
            (root / "overlay" / name / part).mkdir(parents=True)
        Path(target).mkdir(parents=True, exist_ok=True)
        overlays.append({"lower": lower, "target": target, "upper": str(root / "overlay" / name / "upper"),
                         "work": str(root / "overlay" / name / "work")})
    return {"name": host.name, "address": host.address, "root": str(root), "gpus": host.gpu_count, "overlays": overlays,
            "modules": str(nvml.host_dir(gpu / "state.json") / "modules") if host.gpu else "", "binds": binds, "on_boot": on_boot, "on_reboot": on_reboot, "reboot_s": 0}


# The directories a host has its own of (bound over the machine's), and their folders in the host's root.
# /usr is the host's own too, as an overlay of the machine's (the host's writes under hosts/NAME/overlay/usr/upper),
# so what lives in the machine's /usr is seen as it is; /var/lib/dpkg likewise (overlay/dpkg/upper): the host
# starts with the machine's installed packages, and a package it installs is its own.
PRIVATE_DIRS = (("/root", "root"), ("/usr/local", "usr-local"), ("/var", "var"), ("/tmp", "tmp"))
# What apt needs in the host's /var to install a package (its lists and archives, its log).
APT_DIRS = ("lib/apt/lists/partial", "cache/apt/archives/partial", "log/apt")


def _python_paths() -> list[Path]:
    """What simcluster's stand-ins on a host (nvidia-smi, the reboot of the GPU state) run: this Python by its
    path (``sys.executable``: a virtualenv's), so its virtualenv, its base installation, and the import path
    entry simcluster comes from (a checkout's ``src`` when installed in editable mode)."""
    import simcluster

    paths = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(),
             Path(simcluster.__file__).resolve().parent.parent}
    if Path(sys.base_prefix).resolve() == Path("/usr/local"):
        # A Python installed in /usr/local itself: its interpreter, standard library and shared library only,
        # so that the host's own /usr/local (where the role installs) stays its own.
        paths.discard(Path("/usr/local"))
        paths |= {Path(sys.executable).resolve(), Path(sysconfig.get_path("stdlib")).resolve(),
                  Path(sysconfig.get_path("platstdlib")).resolve()}
        library = Path(sysconfig.get_config_var("LIBDIR") or "/nonexistent", sysconfig.get_config_var("LDLIBRARY") or "")
        if library.is_file():
            paths.add(library.resolve())
    return [path for path in sorted(paths) if not any(path != other and path.is_relative_to(other) for other in paths)]


def _python_binds(root: Path) -> list[list[str]]:
    """Binds that show the host the Python its stand-ins run, where it lives in a directory the host has its
    own of (a checkout under /tmp, a pyenv under /root): at the same path, over an empty mount point made in
    the host's private copy. A checkout elsewhere (/work, /home, /opt) is visible as it is."""
    binds: list[list[str]] = []
    for path in _python_paths():
        hidden = next(((PurePath(h), private) for h, private in PRIVATE_DIRS if path.is_relative_to(h)), None)
        if hidden is None or path == hidden[0]:
            continue
        target = root / hidden[1] / path.relative_to(hidden[0])
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        binds.append([str(path), str(path)])
    return binds


def _layout_slurm(state: Path, hosts: list[Host]) -> None:
    controller = next(host for host in hosts if "slurm_controller" in host.roles)
    nodes = [host for host in hosts if "slurm_node" in host.roles]
    conf = slurm_files.slurm_conf((controller.name, controller.address),
                                  [(host.name, host.address, host.gpu_count) for host in nodes])
    key = os.urandom(1024)
    slurm_files.layout(state / "hosts" / controller.name, conf, "", key, ["munge.service", "slurmctld.service"])
    for host in nodes:
        slurm_files.layout(state / "hosts" / host.name, conf, slurm_files.gres_conf(host.name, host.gpu_count), key,
                           ["munge.service", "slurmd.service"])


def host_key(state: Path, name: str) -> str:
    return (state / "hosts" / name / "etc" / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()[:2]


# -- running ------------------------------------------------------------------------------------------------

def _running(state: Path) -> dict[str, Any] | None:
    try:
        running = json.loads((state / "run.json").read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(running["supervisor"]), 0)
    except (OSError, KeyError, ValueError):
        return None
    return running


def ssh_command(state: Path, host: str, address: str, *command: str) -> list[str]:
    """The ssh command line that reaches ``host`` as Ansible does (the inventory's key and options)."""
    return ["ssh", *ssh_options(state), "-o", "BatchMode=yes", f"root@{address}", *command]


def ssh_options(state: Path) -> list[str]:
    running = _running(state)
    if running is None:
        raise HostsError(f"no test hosts run from {state}: run `simcluster hosts up`")
    return ["-i", str(state / "ssh" / "id_ed25519"), "-o", f"UserKnownHostsFile={state / 'ssh' / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=yes", "-o",
            f"ProxyCommand={sys.executable} -m simcluster.hosts.proxy {running['hub']} %h %p"]


def _wait_for_ssh(state: Path, hosts: list[Host], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = {host.name: host for host in hosts}
    last = ""
    while waiting and time.monotonic() < deadline:
        probes = {name: subprocess.Popen(ssh_command(state, name, host.address, "true"), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True, start_new_session=True)
                  for name, host in waiting.items()}
        for name, probe in probes.items():
            try:
                _, err = probe.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                probe.kill()
                err = "timed out"
            if probe.returncode == 0:
                waiting.pop(name)
            else:
                last = f"{name}: {err.strip().splitlines()[-1] if err.strip() else probe.returncode}"
        if waiting:
            time.sleep(0.3)
    if waiting:
        raise HostsError(f"{len(waiting)} hosts do not answer over SSH (last: {last}); see "
                         f"{state}/hosts/NAME/console.log")


def up(state: Path, fleet_path: str | None, slurm: bool, extra_env: dict[str, str] | None = None) -> list[Host]:
    if os.geteuid() != 0:
        raise HostsError("test hosts need root (network, mount, UTS and PID namespaces)")
    for program in ("/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/python3", *(
            ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged") if slurm else ())):
        if not os.path.exists(program):
            raise HostsError(f"{program} is not installed: run scripts/host-packages.sh (installs Debian's "
                             "openssh-server, slurmctld, slurmd, munge)")
    fleet = fleet_file.load(fleet_path or DEFAULT_FLEET)
    hosts = plan(fleet, slurm)
    down(state)
    shutil.rmtree(state / "hosts", ignore_errors=True)
    for stale in ("run.json", "inventory.yml", "hosts.json"):
        (state / stale).unlink(missing_ok=True)
    (state / "ssh").mkdir(parents=True, exist_ok=True)
    (state / "bin").mkdir(exist_ok=True)
    (state / "bin" / "systemctl").write_text("#!/usr/bin/python3\n" + Path(__file__).with_name("systemctl.py").read_text())
    os.chmod(state / "bin" / "systemctl", 0o755)
    key = state / "ssh" / "id_ed25519"
    if not key.exists():
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "simcluster-hosts", "-f", str(key)], "ssh-keygen")
    public_key = (state / "ssh" / "id_ed25519.pub").read_text()
    specs = [_layout_host(state, host, hosts, public_key, extra_env or {}) for host in hosts]
    for host, spec in zip(hosts, specs, strict=True):
        spec["reboot_s"] = 0.0 if not host.gpu else min(fleet.simulation.reboot_s, 1.0)
    if slurm:
        _layout_slurm(state, hosts)
    (state / "ssh" / "known_hosts").write_text("".join(
        f"{host.address} {' '.join(host_key(state, host.name))}\n" for host in hosts))
    (state / "hosts.json").write_text(json.dumps({
        "prefix": PREFIX, "hub_address": HUB_ADDRESS, "slurm": slurm, "fleet": fleet.source, "hosts": specs,
        "plan": [vars(host) for host in hosts]}, indent=2))
    log = open(state / "supervisor.log", "a")  # noqa: SIM115 (handed to the supervisor)
    subprocess.Popen([sys.executable, "-m", "simcluster.hosts.supervisor", str(state)], stdout=log, stderr=log,
                     stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    deadline = time.monotonic() + 30
    while _running(state) is None:
        if time.monotonic() > deadline:
            raise HostsError(f"the hosts' supervisor did not start; see {state}/supervisor.log")
        time.sleep(0.1)
    try:
        _wait_for_ssh(state, hosts, SSH_READY_TIMEOUT_S)
    except HostsError:
        down(state)
        raise
    write_inventory(state)
    return hosts


def down(state: Path) -> bool:
    """Stop the hosts (True when some ran)."""
    running = _running(state)
    if running is None:
        return False
    pid = int(running["supervisor"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        # The supervisor is this process's child when this process started it (a test session): reaped here, or it
        # stays a zombie that signal 0 still finds.
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    (state / "run.json").unlink(missing_ok=True)
    # Ansible's persisted connections to these hosts end with them; their directory goes too.
    shutil.rmtree(control_path_dir(state), ignore_errors=True)
    return True


def gpu_state_file(state: Path, name: str) -> Path | None:
    """The GPU-less NVML state file of the running test host ``name`` (None when no running host has that name)."""
    if _running(state) is None:
        return None
    try:
        hosts = load_plan(state)
    except HostsError:
        return None
    found = state / "hosts" / name / "gpu" / "state.json"
    return found if any(host.name == name and host.gpu for host in hosts) and found.exists() else None


def load_plan(state: Path) -> list[Host]:
    try:
        data = json.loads((state / "hosts.json").read_text())
    except (OSError, ValueError):
        raise HostsError(f"no test hosts in {state}: run `simcluster hosts up`") from None
    return [Host(**item) for item in data["plan"]]


def control_path_dir(state: Path) -> Path:
    """Where Ansible keeps the host set's persisted SSH connections: short (a socket's path has at most 107
    bytes; Ansible adds 41), one per state dir."""
    return Path.home() / ".ansible" / "cp" / ("hosts-" + hashlib.sha256(str(state).encode()).hexdigest()[:12])


def write_inventory(state: Path) -> Path:
    """The Ansible inventory of the running hosts (YAML): mig_hosts, one group per pool, Slurm's groups."""
    hosts = load_plan(state)
    common = " ".join(f'"{option}"' if " " in option else option for option in ssh_options(state))
    groups: dict[str, Any] = {"mig_hosts": {"hosts": {}}}
    for host in hosts:
        entry = {"ansible_host": host.address}
        if "mig_host" in host.roles:
            groups["mig_hosts"]["hosts"][host.name] = entry
            groups.setdefault(group_name(host.pool), {"hosts": {}})["hosts"][host.name] = {}
            groups[group_name(host.pool)].setdefault("vars", {"mig_host_pool": host.pool})
        if "slurm_node" in host.roles:
            groups.setdefault("slurm_nodes", {"hosts": {}})["hosts"][host.name] = {}
        if "slurm_controller" in host.roles:
            groups.setdefault("slurm_controller", {"hosts": {}})["hosts"][host.name] = entry
    inventory = {"all": {
        "vars": {"ansible_user": "root", "ansible_python_interpreter": "/usr/bin/python3", "ansible_pipelining": True,
                 # Forks that delegate to the Slurm controller at once race to open its shared SSH connection
                 # ("Data could not be sent to remote host"): retried, as on a busy site.
                 "ansible_ssh_retries": 3,
                 # Ansible names a persisted connection by address, port and user, which every host set shares
                 # (169.254.77.N:22, root): each set keeps its own, so two sets run side by side (make test runs
                 # tests/hosts and the Molecule scenario at once) and a new set never meets an old set's.
                 "ansible_control_path_dir": str(control_path_dir(state)),
                 "ansible_ssh_common_args": common.replace("-i " + str(state / "ssh" / "id_ed25519") + " ", ""),
                 "ansible_ssh_private_key_file": str(state / "ssh" / "id_ed25519")},
        "children": groups}}
    path = state / "inventory.yml"
    path.write_text("# Written by `simcluster hosts inventory`: the running test hosts.\n"
                    + yaml.safe_dump(inventory, sort_keys=False, width=1000))
    return path
