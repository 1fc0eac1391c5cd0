"""The test hosts' supervisor: ``python -m simcluster.hosts.supervisor STATE_DIR``, one per host set.

It reads ``STATE_DIR/hosts.json`` (written by :mod:`simcluster.hosts.hostset`) and starts

- the **hub**: a network namespace of its own with one bridge (``br0``), the hosts' shared link, with the
  address the control host's connections come from (the ProxyCommand runs in this namespace); nothing in
  it routes elsewhere;
- one **host** per entry: a process that is PID 1 of new PID, mount, UTS and network namespaces
  (:func:`host_init`). Its network is one veth pair, ``eth0`` in the host and the other end on the hub's
  bridge, with an address of 169.254.0.0/16 (link-local, never routed) that only these namespaces own.
  Its ``/etc``, ``/var``, ``/usr/local``, ``/root`` and ``/tmp`` are private directories under the state
  dir, bound over the machine's; ``/usr`` and ``/var/lib/dpkg`` are overlays of the machine's whose
  writes stay in the state dir (a package installed on the host changes neither the machine's ``/usr``
  nor its dpkg database); ``/run`` is a tmpfs; ``/proc`` its own.

The control host (Ansible) reaches a host's sshd from the hub's namespace (:mod:`simcluster.hosts.proxy`
as SSH's ProxyCommand), so no address or route is added to the machine's own network namespace.

A host "reboots" when its ``reboot``/``shutdown -r`` (the systemctl stand-in) signals its PID 1 with
SIGUSR1: every process of the host is killed, ``/run`` is emptied, a new boot id is written (bound over
``/proc/sys/kernel/random/boot_id``, which Ansible's reboot module compares), the boot hooks run (the
GPU-less NVML's reboot: pending MIG modes take effect, instances are gone), and the host boots: sshd,
then the units enabled in ``multi-user.target.wants`` (the stand-in starts them).

Nothing outlives the supervisor: hosts and hub die with it (PR_SET_PDEATHSIG), and a host's processes
die with its PID 1. Standard library only: it starts once per host set and forks per host.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_PRIVATE, MS_NOSUID, MS_NODEV, MS_NOEXEC = 4096, 16384, 1 << 18, 2, 4, 8
PR_SET_PDEATHSIG = 1
SHUTDOWN_GRACE_S = 3.0
UNBLOCKED: set[int] = set()

_libc = ctypes.CDLL(None, use_errno=True)


class HostError(RuntimeError):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        raise HostError(f"{what}: {os.strerror(ctypes.get_errno())}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), data.encode() if data else None), f"mount {source or fstype} on {target}")


def _umount(target: str) -> None:
    _check(_libc.umount2(target.encode(), 2), f"umount {target}")  # MNT_DETACH


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise HostError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


# -- one host: PID 1 of its namespaces ------------------------------------------------------------------------

def _mounts(host: dict[str, Any]) -> None:
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    root = host["root"]
    binds = [(os.path.join(root, name), target) for name, target in (
        ("etc", "/etc"), ("var", "/var"), ("usr-local", "/usr/local"), ("root", "/root"), ("tmp", "/tmp"))]
    # Ansible's reboot module tells a reboot by a new boot id; this host's boots have their own.
    late = [(os.path.join(root, "boot_id"), "/proc/sys/kernel/random/boot_id"),
            *((source, target) for source, target in host.get("binds", []))]
    modules = Path(host["modules"]).read_text() if host.get("modules") else ""
    # Every source is opened before any bind: the state dir may be under a directory a bind hides (/tmp).
    opened = [(os.open(source, os.O_PATH | os.O_CLOEXEC), target) for source, target in binds + late]
    # The host's own /usr and dpkg database: the machine's, read through, with the host's writes kept in its
    # state dir (a package the host installs lands there, not in the machine's /usr). Before the binds: the
    # private /usr/local is bound over the overlaid /usr, and the private /var brings its dpkg overlay along.
    for overlay in host.get("overlays", []):
        _mount("overlay", overlay["target"], "overlay", 0,
               f"lowerdir={overlay['lower']},upperdir={overlay['upper']},workdir={overlay['work']}")
    for fd, target in opened[:len(binds)]:
        _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    _mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    _proc(modules)
    _devices(int(host.get("gpus", 0)))
    for fd, target in opened[len(binds):]:
        _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND)
    for fd, _ in opened:
        os.close(fd)
    _check(_libc.sethostname(host["name"].encode(), len(host["name"])), "sethostname")


def _proc(modules: str) -> None:
    """The host's /proc: its own (new PID namespace). When the host has a module list to show (the nvidia
    module, which mig-parted and NVIDIA's service.sh look for) and this kernel has no /proc/modules (built
    without loadable modules) to bind it over, /proc is a tmpfs holding that list and links to every entry
    of a procfs mounted at /proc/.proc; PID entries are linked as processes come and go (:func:`_sync_proc`)."""
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if not modules:
        return
    if os.path.exists("/proc/modules"):
        Path("/run/.modules").write_text(modules)
        _mount("/run/.modules", "/proc/modules", None, MS_BIND)
        return
    _umount("/proc")
    _mount("tmpfs", "/proc", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0555")
    os.mkdir("/proc/.proc")
    _mount("proc", "/proc/.proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    Path("/proc/modules").write_text(modules)
    _sync_proc()


PID_LINKS_AHEAD = 2048


def _sync_proc() -> None:
    """Link /proc's entries to /proc/.proc's: the non-numeric ones, the PIDs that run, and the next PIDs the
    namespace will hand out (dangling until used), so a process started between two syncs finds itself."""
    if not os.path.isdir("/proc/.proc"):
        return
    present = set(os.listdir("/proc/.proc"))
    pids = [int(name) for name in present if name.isdigit()]
    highest = max(pids, default=1)
    wanted = {name for name in present if not name.isdigit()} | {str(pid) for pid in pids} | {
        str(pid) for pid in range(highest + 1, highest + PID_LINKS_AHEAD)}
    linked = {name for name in os.listdir("/proc") if name not in (".proc", "modules")}
    for name in wanted - linked:
        with contextlib.suppress(FileExistsError):
            os.symlink(f"/proc/.proc/{name}", f"/proc/{name}")
    for name in linked - wanted:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/proc/{name}")


def _devices(gpus: int) -> None:
    """The host's own /dev: the machine's plain devices, its own ptys, and the NVIDIA driver's device files
    (character devices, major 195, as the driver makes them; no driver answers behind them: the GPU-less
    NVML is the GPUs here). The MIG capability files (``/dev/nvidia-caps``) are made for every possible GPU
    instance, numbered as the driver's ``mig-minors`` numbers them (``gpuG/giI/access``: 3 + 135 G + 9 I)."""
    plain = {name: os.open(f"/dev/{name}", os.O_PATH | os.O_CLOEXEC)
             for name in ("null", "zero", "full", "random", "urandom", "tty")}
    _mount("tmpfs", "/dev", "tmpfs", MS_NOSUID, "mode=0755")
    for name, fd in plain.items():
        Path("/dev", name).touch()
        _mount(f"/proc/self/fd/{fd}", f"/dev/{name}", None, MS_BIND)
        os.close(fd)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")):
        os.symlink(target, f"/dev/{name}")
    os.mkdir("/dev/pts")
    _mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
    os.mkdir("/dev/shm")
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    nvidia = [("nvidiactl", 195, 255), *((f"nvidia{index}", 195, index) for index in range(gpus))]
    if gpus:
        os.mkdir("/dev/nvidia-caps")
        caps = int(Path("/proc/devices").read_text().split("nvidia-caps")[0].split()[-1]) if (
            "nvidia-caps" in Path("/proc/devices").read_text()) else 511
        nvidia += [(f"nvidia-caps/nvidia-cap{minor}", caps, minor) for minor in (1, 2)]
        nvidia += [(f"nvidia-caps/nvidia-cap{3 + 135 * gpu + 9 * gi}", caps, 3 + 135 * gpu + 9 * gi)
                   for gpu in range(gpus) for gi in range(15)]
    for name, major, minor in nvidia:
        os.mknod(f"/dev/{name}", 0o20666, os.makedev(major, minor))


def _unblocked() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, UNBLOCKED)


def _boot(host: dict[str, Any], log: Any) -> None:
    with open("/proc/sys/kernel/random/boot_id", "w") as boot_id:  # the host's own file, bound there
        boot_id.write(f"{uuid.uuid4()}\n")
    for path in ("/run/sshd", "/run/lock"):
        os.makedirs(path, exist_ok=True)
    for command in host.get("on_boot", []):
        subprocess.run(command, stdout=log, stderr=log, preexec_fn=_unblocked)
    subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/sshd_config"], stdout=log, stderr=log,
                     stdin=subprocess.DEVNULL, preexec_fn=_unblocked, start_new_session=True)
    # The enabled units, as systemd starts multi-user.target (the stand-in reads the .wants links).
    subprocess.Popen(["/usr/bin/systemctl", "--boot"], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                     preexec_fn=_unblocked, start_new_session=True)
    Path("/run/simcluster-booted").write_text(f"{time.time():.3f}\n")


def _kill_all() -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(-1, signal.SIGTERM)
    deadline = time.monotonic() + SHUTDOWN_GRACE_S
    while time.monotonic() < deadline:
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(-1, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, 0)[0] > 0:
            pass


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def host_init(host: dict[str, Any], network_ready: int) -> int:
    """PID 1 of a host: mount its filesystem, wait for its network, boot, reap, reboot when asked."""
    signals = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    log = open(os.path.join(host["root"], "console.log"), "a", buffering=1)  # noqa: SIM115 (lives with init)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        _mounts(host)
        os.read(network_ready, 1)
        os.close(network_ready)
        _boot(host, log)
    except (OSError, HostError) as exc:
        print(f"host {host['name']}: cannot boot: {exc}", flush=True)
        return 1
    while True:
        info = signal.sigtimedwait(signals, 0.5)
        _reap()
        _sync_proc()
        if info is None or info.si_signo == signal.SIGCHLD:
            continue
        if info.si_signo in (signal.SIGTERM, signal.SIGINT):
            _kill_all()
            return 0
        # SIGUSR1: a reboot. What `reboot` ran returns first, as a real reboot lets the shell answer.
        print(f"host {host['name']}: rebooting", flush=True)
        time.sleep(0.5)
        _kill_all()
        _umount("/run")
        _mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        time.sleep(float(host.get("reboot_s", 0)))
        for command in host.get("on_reboot", []):
            subprocess.run(command, stdout=log, stderr=log, preexec_fn=_unblocked)
        _boot(host, log)


# -- the supervisor -------------------------------------------------------------------------------------------

def _fork_hub(address: str) -> int:
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        try:
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            _check(_libc.unshare(CLONE_NEWNET), "unshare(network)")
            for command in (["ip", "link", "set", "lo", "up"], ["ip", "link", "add", "br0", "type", "bridge"],
                            ["ip", "address", "add", address, "dev", "br0"], ["ip", "link", "set", "br0", "up"]):
                _run(command)
            os.write(ready_w, b"1")
        except Exception as exc:  # reported by the parent: the pipe closes without a byte
            print(f"hub: {exc}", flush=True)
            os._exit(1)
        while True:
            signal.pause()
    os.close(ready_w)
    if os.read(ready_r, 1) != b"1":
        raise HostError("the hosts' hub network namespace could not be made (see the log)")
    os.close(ready_r)
    return pid


def _fork_host(host: dict[str, Any]) -> tuple[int, int, int]:
    """Start a host; returns (the launcher's pid, PID 1's pid here, the write end of its network-ready pipe)."""
    ready_r, ready_w = os.pipe()
    pid_r, pid_w = os.pipe()
    launcher = os.fork()
    if launcher == 0:
        os.close(ready_w)
        os.close(pid_r)
        try:
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWNET | CLONE_NEWPID), "unshare")
            init = os.fork()
            if init == 0:
                os.close(pid_w)
                _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                os._exit(host_init(host, ready_r))
            os.write(pid_w, str(init).encode())
            os.close(pid_w)
            signal.signal(signal.SIGTERM, lambda *_: os.kill(init, signal.SIGTERM))
            while True:
                try:
                    _, status = os.waitpid(init, 0)
                    break
                except InterruptedError:
                    continue
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        except Exception as exc:
            print(f"host {host['name']}: {exc}", flush=True)
            os._exit(1)
    os.close(ready_r)
    os.close(pid_w)
    text = b""
    while chunk := os.read(pid_r, 32):
        text += chunk
    os.close(pid_r)
    if not text:
        raise HostError(f"host {host['name']}: its namespaces could not be made (see the log)")
    return launcher, int(text), ready_w


def _link(hub: int, index: int, init: int, host: dict[str, Any], prefix: int) -> None:
    port = f"h{index}"
    _run(["ip", "link", "add", port, "netns", str(hub), "type", "veth", "peer", "name", "eth0", "netns", str(init)])
    _run(["nsenter", f"--net=/proc/{hub}/ns/net", "ip", "link", "set", port, "master", "br0", "up"])
    for command in (["ip", "link", "set", "lo", "up"],
                    ["ip", "address", "add", f"{host['address']}/{prefix}", "dev", "eth0"],
                    ["ip", "link", "set", "eth0", "up"]):
        _run(["nsenter", f"--net=/proc/{init}/ns/net", *command])


class _Stop(Exception):
    pass


def _stop(*_: Any) -> None:
    raise _Stop


def main(argv: list[str]) -> int:
    state = Path(argv[0])
    spec = json.loads((state / "hosts.json").read_text())
    launchers: dict[str, int] = {}
    hub = 0
    try:
        hub = _fork_hub(f"{spec['hub_address']}/{spec['prefix']}")
        inits: dict[str, int] = {}
        for index, host in enumerate(spec["hosts"]):
            launcher, init, ready = _fork_host(host)
            launchers[host["name"]] = launcher
            inits[host["name"]] = init
            _link(hub, index, init, host, spec["prefix"])
            os.write(ready, b"1")
            os.close(ready)
        running = {"supervisor": os.getpid(), "hub": hub, "hosts": inits}
        (state / "run.json.tmp").write_text(json.dumps(running, indent=2))
        os.replace(state / "run.json.tmp", state / "run.json")
        _log(f"{len(inits)} hosts up")
    except (HostError, OSError) as exc:
        _log(f"cannot start the hosts: {exc}")
        for pid in launchers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        return 1
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while True:
            pid, status = os.waitpid(-1, 0)
            name = next((n for n, p in launchers.items() if p == pid), None)
            if name:
                _log(f"host {name} stopped (exit {os.waitstatus_to_exitcode(status)})")
    except _Stop:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _log("stopping the hosts")
    for pid in launchers.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + SHUTDOWN_GRACE_S + 2
    for pid in launchers.values():
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
            except ChildProcessError:
                break
            time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(hub, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        (state / "run.json").unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
