"""A STAND-IN for ``systemctl`` on simcluster's test hosts, where no systemd runs as PID 1.

The test hosts are namespaces on one machine (see ``simcluster.hosts.supervisor``); systemd cannot be
each host's init here. NVIDIA's MIG manager scripts (``service.sh``, ``hooks.sh``, ``utils.sh``) and the
playbook drive services with ``systemctl``, and Debian's packages ship unit files, so this program reads
those unit files and runs their processes, for exactly what those callers use:

- ``start|stop|restart [--no-block] UNIT...``: Type ``oneshot`` (ExecStartPre/ExecStart/ExecStartPost in
  order, waited for, TimeoutStartSec honoured, RemainAfterExit), ``forking`` (PIDFile=) and the others
  (``simple``, ``exec``, ``notify``: the process is the service). Environment=, EnvironmentFile=,
  RuntimeDirectory=, User=/Group=, ConditionPathExists= and drop-ins (``UNIT.d/*.conf``) apply. Stop
  sends SIGTERM to the service's process group, then SIGKILL after TimeoutStopSec (90 s by default).
- ``is-active [-q]``, ``is-enabled``, ``enable|disable [--now]`` (the ``WantedBy=`` links, as systemd makes
  them), ``list-unit-files [--state=S,...] [PATTERN]``, ``show UNIT`` (a few properties), ``status``,
  ``daemon-reload`` (nothing to do: unit files are read at every call);
- ``reboot``, ``shutdown -r`` (this file is bound over ``/usr/bin/systemctl``, to which Debian's
  ``reboot``/``shutdown`` link): the host's PID 1 is asked to reboot;
- ``--boot`` (PID 1 at boot): start the units enabled in ``multi-user.target.wants``, ordered by After=.

A unit's output goes to ``/var/log/simcluster-systemd/UNIT.log``, every start and stop to
``/var/log/simcluster-systemd/journal`` (a time-stamped line each); its state to ``/run/simcluster-systemd``
(gone at reboot, as systemd's). Standard library only: it runs on the host's own ``/usr/bin/python3`` (the shebang is added where it is
installed).
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import grp
import json
import os
import pwd
import re
import shlex
import signal
import subprocess
import sys
import time

# systemd's unit search path; /lib/systemd/system is where Debian's packages put units, the same directory as
# /usr/lib/systemd/system where /lib links to usr/lib (counted once, or its drop-ins would be read twice).
UNIT_DIRS = tuple(dict.fromkeys(os.path.realpath(directory) for directory in (
    "/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system",
    "/lib/systemd/system")))
STATE_DIR = "/run/simcluster-systemd"
LOG_DIR = "/var/log/simcluster-systemd"
STOP_TIMEOUT_S = 90.0  # systemd's DefaultTimeoutStopSec
BOOT_TARGET = "multi-user.target"


def _name(unit: str) -> str:
    return unit if "." in unit else f"{unit}.service"


def _parse(text: str, into: dict[str, dict[str, list[str]]]) -> None:
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            into.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        values = into.setdefault(section, {}).setdefault(key.strip(), [])
        if value.strip() == "" and key.strip().startswith("Exec"):
            values.clear()  # an empty assignment resets the list, as in systemd
        else:
            values.append(value.strip())


class Unit:
    def __init__(self, name: str):
        self.name = _name(name)
        self.path = next((os.path.join(d, self.name) for d in UNIT_DIRS
                          if os.path.isfile(os.path.join(d, self.name))), "")
        self.conf: dict[str, dict[str, list[str]]] = {}
        if self.path:
            with open(self.path) as handle:
                _parse(handle.read(), self.conf)
            for directory in UNIT_DIRS:
                for dropin in sorted(glob.glob(os.path.join(directory, f"{self.name}.d", "*.conf"))):
                    with open(dropin) as handle:
                        _parse(handle.read(), self.conf)

    def get(self, section: str, key: str, default: str = "") -> str:
        values = self.conf.get(section, {}).get(key)
        return values[-1] if values else default

    def all(self, section: str, key: str) -> list[str]:
        return list(self.conf.get(section, {}).get(key, []))

    @property
    def kind(self) -> str:
        return self.get("Service", "Type", "simple")

    def wanted_by(self) -> list[str]:
        return [target for value in self.all("Install", "WantedBy") for target in value.split()]

    def enabled(self) -> bool:
        return any(os.path.lexists(os.path.join(d, f"{t}.wants", self.name)) for d in UNIT_DIRS
                   for t in self.wanted_by() or [BOOT_TARGET])

    def file_state(self) -> str:
        if not self.path:
            return "not-found"
        if self.enabled():
            return "enabled"
        return "disabled" if self.wanted_by() else "static"

    # -- runtime state --

    def _state_file(self) -> str:
        return os.path.join(STATE_DIR, f"{self.name}.json")

    def state(self) -> dict:
        try:
            with open(self._state_file()) as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return {}

    def save(self, **state: object) -> None:
        os.makedirs(STATE_DIR, exist_ok=True)
        with open(self._state_file() + ".tmp", "w") as handle:
            json.dump(state, handle)
        os.replace(self._state_file() + ".tmp", self._state_file())

    def active(self) -> str:
        state = self.state()
        if state.get("state") == "active" and state.get("pid"):
            return "active" if _alive(int(state["pid"])) else "failed"
        return state.get("state") or "inactive"

    # -- environment and commands --

    def environment(self) -> dict[str, str]:
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        for name in ("SIMCLUSTER_NVML_STATE",):
            if os.environ.get(name):
                env[name] = os.environ[name]
        env.update(_environment_file("/etc/environment", optional=True))
        for value in self.all("Service", "EnvironmentFile"):
            optional = value.startswith("-")
            env.update(_environment_file(value.lstrip("-"), optional))
        for value in self.all("Service", "Environment"):
            for word in shlex.split(value):
                key, _, item = word.partition("=")
                env[key] = item
        return env

    def commands(self, key: str, env: dict[str, str]) -> list[tuple[list[str], bool]]:
        result = []
        for value in self.all("Service", key):
            ignore = False
            while value and value[0] in "-@+!:":
                ignore = ignore or value[0] == "-"
                value = value[1:]
            words = []
            for word in shlex.split(value):
                if re.fullmatch(r"\$\w+", word):
                    words.extend(env.get(word[1:], "").split())
                else:
                    words.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
            result.append((words, ignore))
        return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive (its parent has not reaped it yet)
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _environment_file(path: str, optional: bool) -> dict[str, str]:
    result: dict[str, str] = {}
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except OSError:
        if optional:
            return result
        raise SystemExit(f"systemctl: cannot read the environment file {path}") from None
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            result[key.strip().removeprefix("export ").strip()] = value.strip().strip("\"'")
    return result


JOURNAL = os.path.join(LOG_DIR, "journal")


def _journal(unit: Unit, event: str) -> None:
    """One line per start and stop: when (epoch seconds), which unit, what happened (a log the tests read)."""
    os.makedirs(LOG_DIR, exist_ok=True)
    with open(JOURNAL, "a") as handle:
        handle.write(f"{time.time():.3f} {unit.name} {event}\n")


def _log_file(unit: Unit):
    os.makedirs(LOG_DIR, exist_ok=True)
    return open(os.path.join(LOG_DIR, f"{unit.name}.log"), "a")


def _credentials(unit: Unit):
    user, group = unit.get("Service", "User"), unit.get("Service", "Group")

    def become() -> None:
        os.setsid()
        if group or user:
            gid = grp.getgrnam(group).gr_gid if group else pwd.getpwnam(user).pw_gid
            os.setgroups([])
            os.setgid(gid)
        if user:
            os.setuid(pwd.getpwnam(user).pw_uid)
    return become


def _runtime_directories(unit: Unit) -> None:
    user = unit.get("Service", "User")
    for value in unit.all("Service", "RuntimeDirectory"):
        for name in value.split():
            path = os.path.join("/run", name)
            os.makedirs(path, exist_ok=True)
            os.chmod(path, int(unit.get("Service", "RuntimeDirectoryMode", "0755"), 8))
            if user:
                entry = pwd.getpwnam(user)
                os.chown(path, entry.pw_uid, entry.pw_gid)


def _conditions_met(unit: Unit) -> bool:
    for value in unit.all("Unit", "ConditionPathExists"):
        negate = value.startswith("!")
        if os.path.exists(value.lstrip("!")) == negate:
            return False
    return True


def start(unit: Unit) -> int:
    status = _start(unit)
    if unit.path:
        _journal(unit, "started" if status == 0 else f"failed({status})")
    return status


def _start(unit: Unit) -> int:
    if not unit.path:
        print(f"Failed to start {unit.name}: Unit {unit.name} not found.", file=sys.stderr)
        return 5
    if unit.active() == "active":
        return 0
    if not _conditions_met(unit):
        return 0
    env = unit.environment()
    _runtime_directories(unit)
    log = _log_file(unit)
    timeout = float(unit.get("Service", "TimeoutStartSec", "90").rstrip("s") or 90)
    kind = unit.kind

    def run(key: str) -> bool:
        for words, ignore in unit.commands(key, env):
            try:
                done = subprocess.run(words, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                      preexec_fn=_credentials(unit), timeout=timeout)
                code = done.returncode
            except subprocess.TimeoutExpired:
                code = -1
            except OSError as exc:
                print(f"{unit.name}: {words[0]}: {exc.strerror}", file=log, flush=True)
                code = 203
            if code != 0 and not ignore:
                unit.save(state="failed", result=code)
                print(f"Job for {unit.name} failed because the control process exited with error code.\n"
                      f"See \"{LOG_DIR}/{unit.name}.log\" for details.", file=sys.stderr)
                return False
        return True

    if not run("ExecStartPre"):
        return 1
    if kind == "oneshot":
        if not run("ExecStart") or not run("ExecStartPost"):
            return 1
        remain = unit.get("Service", "RemainAfterExit", "no") in ("yes", "true", "1", "on")
        unit.save(state="active" if remain else "inactive", result=0)
        return 0
    if kind == "forking":
        if not run("ExecStart"):
            return 1
        pidfile = unit.get("Service", "PIDFile")
        pid = 0
        for _ in range(100):
            with contextlib.suppress(OSError, ValueError), open(pidfile) as handle:
                pid = int(handle.read().strip())
                break
            time.sleep(0.05)
        unit.save(state="active" if pid else "failed", pid=pid)
        return 0 if pid else 1
    commands = unit.commands("ExecStart", env)
    if not commands:
        print(f"{unit.name}: no ExecStart", file=sys.stderr)
        return 1
    words = commands[0][0]
    try:
        process = subprocess.Popen(words, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                   preexec_fn=_credentials(unit))
    except OSError as exc:
        print(f"Failed to start {unit.name}: {words[0]}: {exc.strerror}", file=sys.stderr)
        unit.save(state="failed", result=203)
        return 1
    unit.save(state="active", pid=process.pid)
    time.sleep(0.2)
    if process.poll() is not None:
        unit.save(state="failed", result=process.returncode)
        print(f"Job for {unit.name} failed: its process exited with {process.returncode}.", file=sys.stderr)
        return 1
    return 0


def stop(unit: Unit) -> int:
    state = unit.state()
    pid = int(state.get("pid") or 0)
    if pid and _alive(pid):
        group = os.getpgid(pid) if unit.get("Service", "KillMode") != "process" else 0
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(group, signal.SIGTERM)
            else:
                os.kill(pid, signal.SIGTERM)
        timeout = float(unit.get("Service", "TimeoutStopSec", str(STOP_TIMEOUT_S)).rstrip("s") or STOP_TIMEOUT_S)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if state:
        unit.save(state="inactive")
    if pid:
        _journal(unit, "stopped")
    return 0


def _link_wants(unit: Unit, enable: bool) -> None:
    for target in unit.wanted_by():
        link = os.path.join("/etc/systemd/system", f"{target}.wants", unit.name)
        if enable:
            os.makedirs(os.path.dirname(link), exist_ok=True)
            if not os.path.lexists(link):
                os.symlink(unit.path, link)
                print(f"Created symlink {link} \u2192 {unit.path}.")
        elif os.path.lexists(link):
            os.unlink(link)
            print(f"Removed \"{link}\".")


def boot() -> int:
    # The admin's and the local packages' links only: the vendor's own target links are systemd's internals.
    wanted = sorted({os.path.basename(p) for d in UNIT_DIRS[:3]
                     for p in glob.glob(os.path.join(d, f"{BOOT_TARGET}.wants", "*.service"))})
    units = {name: Unit(name) for name in wanted}
    order: list[str] = []

    def visit(name: str, seen: tuple[str, ...] = ()) -> None:
        if name in order or name in seen:
            return
        for value in units[name].all("Unit", "After"):
            for after in value.split():
                if after in units:
                    visit(after, (*seen, name))
        order.append(name)

    for name in wanted:
        visit(name)
    status = 0
    for name in order:
        print(f"boot: starting {name}", flush=True)
        status |= start(units[name])
    return status


def reboot() -> int:
    print("Rebooting.", flush=True)
    os.kill(1, signal.SIGUSR1)
    return 0


def main(argv: list[str]) -> int:
    program = os.path.basename(argv[0])
    args = [a for a in argv[1:] if a not in ("-q", "--quiet", "--no-block", "--no-pager", "--system", "--now",
                                              "--full", "-l", "--no-legend", "--plain", "--no-ask-password")]
    flags = set(argv[1:]) - set(args)
    if program in ("reboot",) or (program == "shutdown" and "-r" in args) or args[:1] == ["reboot"]:
        return reboot()
    if program == "shutdown":
        print("shutdown: only -r (reboot) is supported on the test hosts", file=sys.stderr)
        return 1
    states = ""
    for arg in list(args):
        if arg.startswith("--state="):
            states = arg.split("=", 1)[1]
            args.remove(arg)
    if not args:
        print("systemctl (simcluster stand-in): a command is required", file=sys.stderr)
        return 1
    command, names = args[0], args[1:]
    quiet = bool(flags & {"-q", "--quiet"})
    if command == "--boot":
        return boot()
    if command == "daemon-reload":
        return 0
    if command in ("start", "stop", "restart", "try-restart", "reload-or-restart"):
        status = 0
        for name in names:
            unit = Unit(name)
            if command != "start":
                stop(unit)
            if command != "stop":
                if "--no-block" in flags:
                    if os.fork() == 0:
                        os.setsid()
                        os._exit(start(unit))
                    continue
                status = start(unit) or status
        return status
    if command == "is-active":
        answers = [Unit(name).active() for name in names]
        if not quiet:
            print("\n".join(answers))
        return 0 if answers and all(a == "active" for a in answers) else 3
    if command == "is-enabled":
        answers = [Unit(name).file_state() for name in names]
        if not quiet:
            print("\n".join(answers))
        return 0 if answers and all(a == "enabled" for a in answers) else 1
    if command in ("enable", "disable"):
        for name in names:
            unit = Unit(name)
            if not unit.path:
                print(f"Failed to {command} unit: Unit file {unit.name} does not exist.", file=sys.stderr)
                return 1
            _link_wants(unit, command == "enable")
            if "--now" in flags:
                (start if command == "enable" else stop)(unit)
        return 0
    if command == "list-unit-files":
        wanted = set(states.split(",")) - {""}
        seen: set[str] = set()
        for directory in UNIT_DIRS:
            for path in sorted(glob.glob(os.path.join(directory, "*.service"))
                               + glob.glob(os.path.join(directory, "*.target"))):
                name = os.path.basename(path)
                if name in seen or (names and not any(fnmatch.fnmatch(name, p) for p in names)):
                    continue
                seen.add(name)
                state = Unit(name).file_state()
                if not wanted or state in wanted:
                    print(f"{name} {state}")
        return 0 if seen else 1
    if command in ("show", "status"):
        for name in names:
            unit = Unit(name)
            active = unit.active()
            if command == "status":
                print(f"{unit.name} - {unit.get('Unit', 'Description')}\n     Active: {active}")
                continue
            print(f"Id={unit.name}\nLoadState={'loaded' if unit.path else 'not-found'}\nActiveState={active}\n"
                  f"SubState={'running' if active == 'active' else 'dead'}\nUnitFileState={unit.file_state()}\n"
                  f"MainPID={unit.state().get('pid', 0)}\nFragmentPath={unit.path}")
        return 0 if command == "show" or all(Unit(n).active() == "active" for n in names) else 3
    print(f"systemctl (simcluster stand-in): {command} is not supported on the test hosts", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
