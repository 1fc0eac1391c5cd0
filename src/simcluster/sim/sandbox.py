"""The container launcher: ``python -m simcluster.sim.sandbox SPEC.json``, one per running container.

The daemon writes a spec (the filesystem to assemble, the process to run) and starts this
program with two inherited descriptors: the pod's network namespace and the read end of the
daemon's "lifeline" pipe. The launcher

1. enters the pod's network namespace and makes new mount, PID, UTS and IPC namespaces;
2. forks the container's first process, which becomes PID 1 of the new PID namespace: it
   mounts a fresh root (a tmpfs; /usr is an overlay of the host's /usr with the image's files
   bound in; /etc is the image's own; /dev, /proc, /sys, /tmp; the image's files, the pod's
   volumes and the service-account token bound read-only where the image and the pod say),
   chroots into it, drops to the image's user and executes the container's command;
3. waits for it, forwarding SIGTERM (the kubelet's polite stop), and exits with its status
   (128 + signal when killed; 125 when the container could not be created).

Nothing outlives the cluster: when the daemon dies, the lifeline pipe reads EOF and the
launcher kills PID 1; when the launcher dies, PID 1 gets SIGKILL (PR_SET_PDEATHSIG); when PID 1
dies, the kernel kills every other process of its PID namespace. Mounts live in the private
mount namespace and vanish with it.

This module imports only the standard library: it starts once per container.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import sys
from pathlib import Path
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1

EXIT_CANNOT_CREATE = 125  # as `docker run`: the runtime failed, the command never ran
EXIT_CANNOT_EXEC = 126
EXIT_NOT_FOUND = 127

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
HOST_TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")

_libc = ctypes.CDLL(None, use_errno=True)


class SandboxError(RuntimeError):
    pass


def _call(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise SandboxError(f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _call(_libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                      ctypes.c_ulong(flags), data.encode() if data else None),
          f"mount {source or fstype} on {target}")


def _bind(source: str, target: str, readonly: bool) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)
    if readonly:
        _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID)


def _inside(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _make_target(root: str, target: str, directory: bool) -> str:
    """Create the mount point for ``target`` inside the new root (following symlinks inside it)."""
    # Walk the path inside the new root, following its symlinks (e.g. /var/run -> ../run), never the host's.
    parts = Path(target.lstrip("/")).parts
    current = Path(root)
    for index, part in enumerate(parts):
        candidate = current / part
        if candidate.is_symlink():
            link = os.readlink(candidate)
            candidate = Path(root) / link.lstrip("/") if link.startswith("/") else current / link
        if index < len(parts) - 1:
            candidate.mkdir(parents=True, exist_ok=True)
        current = candidate
    path = current
    if directory:
        path.mkdir(parents=True, exist_ok=True)
    elif not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return str(path)


def assemble_root(spec: dict[str, Any]) -> str:
    """Mount the container's filesystem under spec["root"] (in the current, private mount namespace)."""
    root, scratch = spec["root"], spec["scratch"]
    _mount("tmpfs", root, "tmpfs", MS_NOSUID, "mode=0755")
    _mount("tmpfs", scratch, "tmpfs", MS_NOSUID, "mode=0700")
    for name in ("usr-upper", "usr-work"):
        os.mkdir(os.path.join(scratch, name))
    os.mkdir(_inside(root, "/usr"))
    # The host's /usr as the image's base, with the image's own files added in a throw-away upper layer.
    _mount("overlay", _inside(root, "/usr"), "overlay", 0,
           f"lowerdir=/usr,upperdir={scratch}/usr-upper,workdir={scratch}/usr-work")
    for name in HOST_TOP_LEVEL:
        host = f"/{name}"
        if os.path.islink(host):
            os.symlink(os.readlink(host), _inside(root, host))
        elif os.path.isdir(host):
            os.mkdir(_inside(root, host))
            _bind(host, _inside(root, host), readonly=True)
    for directory in ("/etc", "/proc", "/sys", "/dev", "/tmp", "/run", "/var", "/root", "/opt", "/home"):
        os.makedirs(_inside(root, directory), exist_ok=True)
    os.symlink("../run", _inside(root, "/var/run"))
    for path, content in spec.get("files", {}).items():
        target = Path(_inside(root, path))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    for source, path in spec.get("copies", []):
        if os.path.exists(source):
            target = Path(_inside(root, path))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(Path(source).read_bytes())
    home = spec.get("home")
    if home:
        os.makedirs(_inside(root, home), exist_ok=True)
        os.chown(_inside(root, home), spec["uid"], spec["gid"])

    dev = _inside(root, "/dev")
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=0755")
    for name in DEVICES:
        if os.path.exists(f"/dev/{name}"):
            Path(dev, name).touch()
            _bind(f"/dev/{name}", os.path.join(dev, name), readonly=False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join(dev, name))
    os.mkdir(os.path.join(dev, "shm"))
    _mount("tmpfs", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    _mount("proc", _inside(root, "/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    with contextlib.suppress(SandboxError):  # a read-only /sys, as container runtimes give; optional
        _mount("sysfs", _inside(root, "/sys"), "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("tmpfs", _inside(root, "/tmp"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    _mount("tmpfs", _inside(root, "/run"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")

    for bind in spec.get("binds", []):
        source = bind["source"]
        if not os.path.exists(source):
            raise SandboxError(f"{bind['target']}: source {source} does not exist")
        target = _make_target(root, bind["target"], directory=os.path.isdir(source))
        _bind(source, target, readonly=bind.get("readonly", True))
    return root


def _become_container(spec: dict[str, Any]) -> None:
    """In the forked child, PID 1 of the new namespace: build the root, then exec the command."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    process = spec["process"]
    try:
        hostname = spec.get("hostname", "")[:63].encode()
        _call(_libc.sethostname(hostname, len(hostname)), "sethostname")
        root = assemble_root(spec)
        os.chroot(root)
        os.chdir(process.get("cwd") or "/")
        os.setgroups(process.get("groups", []))
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])
    except (OSError, SandboxError) as exc:
        print(f"simcluster: cannot create the container: {exc}", file=sys.stderr, flush=True)
        os._exit(EXIT_CANNOT_CREATE)
    try:
        os.execve(process["path"], process["argv"], process["env"])
    except FileNotFoundError:
        print(f"simcluster: exec {process['path']}: no such file in the image", file=sys.stderr, flush=True)
        os._exit(EXIT_NOT_FOUND)
    except OSError as exc:
        print(f"simcluster: exec {process['path']}: {exc.strerror}", file=sys.stderr, flush=True)
        os._exit(EXIT_CANNOT_EXEC)


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def run(spec: dict[str, Any]) -> int:
    lifeline = spec["lifeline_fd"]
    try:
        _call(_libc.setns(spec["netns_fd"], CLONE_NEWNET), "setns(network)")
        os.close(spec["netns_fd"])
        _call(_libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC),
              "unshare(mount, pid, uts, ipc)")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing mounted here propagates to the host
    except SandboxError as exc:
        print(f"simcluster: cannot create the container: {exc}", file=sys.stderr, flush=True)
        return EXIT_CANNOT_CREATE
    child = os.fork()
    if child == 0:
        os.close(lifeline)
        _become_container(spec)
        os._exit(EXIT_CANNOT_EXEC)  # not reached

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    exited = os.pidfd_open(child)
    watched = [exited, lifeline]
    while True:
        ready, _, _ = select.select(watched, [], [])
        if lifeline in ready and not os.read(lifeline, 1):
            # The daemon is gone: so is the container.
            watched.remove(lifeline)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        if exited in ready:
            _, status = os.waitpid(child, 0)
            return _exit_code(status)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m simcluster.sim.sandbox SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    return run(spec)


if __name__ == "__main__":
    sys.exit(main())
