"""NVIDIA's own code, built from pinned Go modules and cached beside the control plane.

What is built (once; later runs find it in the cache):

- the GPU Operator controller (``github.com/NVIDIA/gpu-operator``, ``./cmd/gpu-operator``), built in a
  copy of its module (its own go.mod and go.sum), together with the module's Helm chart
  (``deployments/gpu-operator``: NFD subchart under ``charts/``, CRDs under ``crds/``) and its operand
  manifests (``assets/``, ``manifests/``);
- ``nvidia-mig-parted``, mig-parted's unmodified CLI, and ``mig-oracle``, a small JSON-lines helper that
  answers questions with mig-parted's parser and selection code and go-nvml's recorded MIG tables. Both
  come from the wrapper module in ``gobuild/nvidia/`` (go.mod and go.sum pin mig-parted, go-nvlib and
  go-nvml; the go.mod is the one place their versions are written).

go-nvml's ``nvml`` package only compiles with cgo (its constants and types are declared in cgo files),
and every mig-parted and go-nvml mock package imports it, so the two mig-parted binaries need a C
compiler to build. They never link libnvidia-ml: NVML is loaded with dlopen on ``Init``, which neither
``assert --valid-config`` nor the helper calls. The operator controller imports no go-nvml and is static.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from simcluster.binaries import BuildError, cache_root

NVIDIA_GOBUILD_DIR = Path(__file__).parent / "gobuild" / "nvidia"

OPERATOR_MODULE = "github.com/NVIDIA/gpu-operator"
OPERATOR_VERSION = "v0.0.0-20250917190837-d73a0086a6ba"
OPERATOR_COMMIT = OPERATOR_VERSION.rsplit("-", 1)[1]
# The module's go.sum hash (what `go mod download -json` reports as Sum): the copy we build is this one.
OPERATOR_SUM = "h1:LoeqwWjR0h2WRyHXmyYCPVwM/dAdKKxjE8LzyyeuqHI="

MIG_PARTED_MODULE = "github.com/NVIDIA/mig-parted"
GO_NVLIB_MODULE = "github.com/NVIDIA/go-nvlib"
GO_NVML_MODULE = "github.com/NVIDIA/go-nvml"
MIG_PARTED_COMMAND = f"{MIG_PARTED_MODULE}/cmd/nvidia-mig-parted"

# Module paths copied from the operator module into the cache, and where the chart lives in it.
OPERATOR_TREES = ("deployments/gpu-operator", "assets", "manifests")
DEFAULT_MIG_CONFIG = "assets/state-mig-manager/0400_configmap.yaml"


def _required_version(module: str) -> str:
    """The version of ``module`` that the wrapper's go.mod requires."""
    text = (NVIDIA_GOBUILD_DIR / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{NVIDIA_GOBUILD_DIR / 'go.mod'} does not require {module}")
    return match.group(1)


MIG_PARTED_VERSION = _required_version(MIG_PARTED_MODULE)
GO_NVLIB_VERSION = _required_version(GO_NVLIB_MODULE)
GO_NVML_VERSION = _required_version(GO_NVML_MODULE)


def _operator_ldflags() -> str:
    info = f"{OPERATOR_MODULE}/internal/info"
    return f"-s -w -X {info}.version={OPERATOR_VERSION} -X {info}.gitCommit={OPERATOR_COMMIT}"


def _mig_parted_ldflags() -> str:
    return f"-s -w -X {MIG_PARTED_MODULE}/internal/info.version={MIG_PARTED_VERSION}"


def _inputs_digest() -> str:
    """Everything a build depends on besides the Go toolchain: the wrapper module and the recipe."""
    digest = hashlib.sha256()
    sources = [NVIDIA_GOBUILD_DIR / "go.mod", NVIDIA_GOBUILD_DIR / "go.sum",
               *sorted(NVIDIA_GOBUILD_DIR.rglob("*.go"))]
    for path in sources:
        digest.update(path.relative_to(NVIDIA_GOBUILD_DIR).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    recipe = [OPERATOR_MODULE, OPERATOR_VERSION, OPERATOR_SUM, _operator_ldflags(), _mig_parted_ldflags(),
              *OPERATOR_TREES]
    digest.update("\0".join(recipe).encode())
    return digest.hexdigest()[:12]


def upstream_dir() -> Path:
    key = (f"gpu-operator-{OPERATOR_VERSION}_mig-parted-{MIG_PARTED_VERSION}_go-nvlib-{GO_NVLIB_VERSION}"
           f"_go-nvml-{GO_NVML_VERSION}_{_inputs_digest()}")
    return cache_root() / "upstream" / key


@dataclass(frozen=True)
class Upstream:
    """A built set of NVIDIA components (see the module docstring); paths only, nothing runs."""

    directory: Path

    @property
    def operator(self) -> Path:
        return self.directory / "bin" / "gpu-operator"

    @property
    def mig_parted(self) -> Path:
        return self.directory / "bin" / "nvidia-mig-parted"

    @property
    def mig_oracle(self) -> Path:
        return self.directory / "bin" / "mig-oracle"

    @property
    def module(self) -> Path:
        """The copied parts of the operator module, at their paths in the module."""
        return self.directory / "gpu-operator"

    @property
    def chart(self) -> Path:
        return self.module / "deployments" / "gpu-operator"

    @property
    def assets(self) -> Path:
        return self.module / "assets"

    @property
    def manifests(self) -> Path:
        return self.module / "manifests"

    @property
    def default_mig_config(self) -> Path:
        return self.module / DEFAULT_MIG_CONFIG

    @property
    def build_info(self) -> Path:
        return self.directory / "build-info.json"

    @property
    def complete(self) -> bool:
        # build-info.json is written last, but a directory is only ever renamed into place whole.
        needed = (self.operator, self.mig_parted, self.mig_oracle, self.chart / "Chart.yaml",
                  self.default_mig_config, self.manifests, self.build_info)
        return all(path.exists() for path in needed)


def find() -> Upstream | None:
    """The built components, or None when ``simcluster build`` has not built them yet."""
    upstream = Upstream(upstream_dir())
    return upstream if upstream.complete else None


def _go_env(cgo: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "GOTOOLCHAIN": "local",            # never fetch another toolchain
        "GOFLAGS": "-mod=readonly",        # never edit a go.mod or go.sum
        "CGO_ENABLED": "1" if cgo else "0",
    })
    if cgo:
        # go-nvml's cgo prologue calls every deprecated NVML entry point; keep the log readable.
        env.setdefault("CGO_CFLAGS", "-O2 -g -Wno-deprecated-declarations")
    return env


_DOWNLOAD_FAILURES = ("reading https://", "dial tcp", "no such host", "module lookup disabled",
                      "proxyconnect", "i/o timeout", "verifying module", "SECURITY ERROR",
                      "missing go.sum entry", "connection refused", "TLS handshake")


def _failure(label: str, result: subprocess.CompletedProcess) -> BuildError:
    lines = [line for line in result.stderr.strip().splitlines() if "warning:" not in line]
    tail = "\n".join(lines[-15:])
    if any(marker in result.stderr for marker in _DOWNLOAD_FAILURES):
        return BuildError(f"building {label} failed: a Go module could not be downloaded "
                          f"(GOPROXY={os.environ.get('GOPROXY') or 'the go default'}; "
                          f"is the module proxy reachable?):\n{tail}")
    return BuildError(f"building {label} failed (exit {result.returncode}):\n{tail}")


def _run(label: str, command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise _failure(label, result)
    return result


def download_module(go: str, module: str, version: str, expected_sum: str, scratch: Path) -> Path:
    """A module's directory in the (read-only) module cache, downloaded if missing, checked against its go.sum
    hash (what `go mod download -json` reports as Sum): the copy we build is the one pinned."""
    env = _go_env(cgo=False)
    env["GOFLAGS"] = ""  # outside any module; -mod does not apply to `go mod download`
    result = subprocess.run([go, "mod", "download", "-json", f"{module}@{version}"],
                            cwd=scratch, env=env, capture_output=True, text=True)
    try:
        info = json.loads(result.stdout)
    except json.JSONDecodeError:
        info = {}
    if result.returncode != 0 or "Error" in info or "Dir" not in info:
        reason = info.get("Error") or result.stderr.strip() or f"exit {result.returncode}"
        raise BuildError(f"the Go module {module}@{version} cannot be downloaded: {reason}")
    if info.get("Sum") != expected_sum:
        raise BuildError(f"the Go module {module}@{version} has hash {info.get('Sum')}, expected {expected_sum}")
    return Path(info["Dir"])


def _download_operator(go: str, scratch: Path) -> Path:
    return download_module(go, OPERATOR_MODULE, OPERATOR_VERSION, OPERATOR_SUM, scratch)


def publish(staging: Path, target: Path, complete: Callable[[], bool]) -> None:
    """Move a finished build from its staging directory to its place in the cache. Two builds may race: losing
    is fine only if the winner left a complete build (``complete``)."""
    staging.chmod(0o755)
    if target.exists():
        shutil.rmtree(target)
    try:
        staging.rename(target)
    except OSError:
        if not complete():
            raise


def copy_tree(source: Path, target: Path) -> None:
    """Copy out of the module cache, whose files and directories are read-only."""
    shutil.copytree(source, target, symlinks=True, copy_function=shutil.copy)
    for root, _dirs, files in os.walk(target):  # top-down: a directory is writable before its children
        os.chmod(root, 0o755)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & stat.S_IXUSR
                os.chmod(path, 0o755 if executable else 0o644)


def _find_go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(f"NVIDIA's components are missing from {upstream_dir()} and cannot be built: "
                         f"the 'go' command is not on PATH")
    return go


def _check_c_compiler(go: str) -> None:
    result = subprocess.run([go, "env", "CC"], env=_go_env(cgo=True), capture_output=True, text=True)
    compiler = (result.stdout.strip().split() or ["gcc"])[0]
    if shutil.which(compiler) is None:
        raise BuildError(f"nvidia-mig-parted and mig-oracle need a C compiler ('{compiler}' is not on PATH): "
                         f"go-nvml's nvml package, which mig-parted imports, only compiles with cgo")


def build(log: IO[str] = sys.stderr) -> Upstream:
    """Build what is missing into the cache (nothing when it is there) and return it."""
    target = upstream_dir()
    upstream = Upstream(target)
    if upstream.complete:
        return upstream
    go = _find_go()
    _check_c_compiler(go)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Upstream(Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent)))
    scratch = Path(tempfile.mkdtemp(prefix="simcluster-gpu-operator-"))
    started = time.monotonic()
    seconds: dict[str, float] = {}

    def step(label: str, note: str) -> float:
        print(f"simcluster: building {label} ({note})", file=log, flush=True)
        return time.monotonic()

    try:
        (staging.directory / "bin").mkdir()
        began = time.monotonic()
        print(f"simcluster: fetching {OPERATOR_MODULE}@{OPERATOR_VERSION} (from the Go module cache or proxy)",
              file=log, flush=True)
        module = _download_operator(go, scratch)
        source = scratch / "gpu-operator"
        copy_tree(module, source)
        for tree in OPERATOR_TREES:
            copy_tree(module / tree, staging.module / tree)
        seconds["download and copy gpu-operator module"] = time.monotonic() - began

        began = step(f"the GPU Operator controller {OPERATOR_VERSION}",
                     "first time only; about 5 minutes on 2 cores")
        _run("the GPU Operator controller",
             [go, "build", "-trimpath", "-ldflags", _operator_ldflags(), "-o", str(staging.operator),
              "./cmd/gpu-operator"], cwd=source, env=_go_env(cgo=False))
        seconds["gpu-operator"] = time.monotonic() - began

        began = step(f"nvidia-mig-parted {MIG_PARTED_VERSION} (go-nvlib {GO_NVLIB_VERSION})",
                     "first time only; under a minute")
        _run("nvidia-mig-parted",
             [go, "build", "-trimpath", "-ldflags", _mig_parted_ldflags(), "-o", str(staging.mig_parted),
              MIG_PARTED_COMMAND], cwd=NVIDIA_GOBUILD_DIR, env=_go_env(cgo=True))
        seconds["nvidia-mig-parted"] = time.monotonic() - began

        began = step("mig-oracle", "first time only; under a minute")
        _run("mig-oracle",
             [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(staging.mig_oracle), "./cmd/mig-oracle"],
             cwd=NVIDIA_GOBUILD_DIR, env=_go_env(cgo=True))
        seconds["mig-oracle"] = time.monotonic() - began

        go_version = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True).stdout.strip()
        staging.build_info.write_text(json.dumps({
            "operator": f"{OPERATOR_MODULE}@{OPERATOR_VERSION}",
            "mig_parted": f"{MIG_PARTED_MODULE}@{MIG_PARTED_VERSION}",
            "go_nvlib": f"{GO_NVLIB_MODULE}@{GO_NVLIB_VERSION}",
            "go_nvml": f"{GO_NVML_MODULE}@{GO_NVML_VERSION}",
            "go": go_version,
            "seconds": {name: round(value, 1) for name, value in seconds.items()},
            "bytes": {path.name: path.stat().st_size
                      for path in (staging.operator, staging.mig_parted, staging.mig_oracle)},
        }, indent=2) + "\n")
        publish(staging.directory, target, lambda: upstream.complete)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if staging.directory.exists():
            shutil.rmtree(staging.directory, ignore_errors=True)
    print(f"simcluster: NVIDIA components built in {time.monotonic() - started:.0f} s into {target}",
          file=log, flush=True)
    return upstream


class MigOracleError(RuntimeError):
    """The helper could not answer (it died, or the request was one it refuses)."""


class MigOracle:
    """One long-lived ``mig-oracle`` process: mig-parted's own parser and selection, go-nvml's tables.

    Use as a context manager (or call ``close``). Requests from several threads are serialised.
    """

    def __init__(self, binary: Path | str | None = None) -> None:
        if binary is None:
            built = find()
            if built is None:
                raise BuildError(f"mig-oracle is not built (expected under {upstream_dir()}): "
                                 f"run 'make binaries' or 'simcluster build'")
            binary = built.mig_oracle
        self.binary = Path(binary)
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._tables: dict | None = None

    def __enter__(self) -> MigOracle:
        with self._lock:
            self._start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start(self) -> subprocess.Popen[str]:
        if self._process is None:
            if self._stderr is not None:
                self._stderr.close()
            self._stderr = tempfile.TemporaryFile(mode="w+", prefix="mig-oracle-stderr-")  # noqa: SIM115 (lives with the process)
            self._process = subprocess.Popen([str(self.binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=self._stderr, text=True, bufsize=1)
        return self._process

    def close(self) -> None:
        with self._lock:
            process, self._process = self._process, None
            if process is not None:
                try:
                    if process.stdin:
                        process.stdin.close()
                    process.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    process.kill()
                    process.wait()
                if process.stdout:
                    process.stdout.close()
            if self._stderr is not None:
                self._stderr.close()
                self._stderr = None

    def _died(self, process: subprocess.Popen[str]) -> MigOracleError:
        code = process.poll()
        detail = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            detail = "\n".join(self._stderr.read().strip().splitlines()[-10:])
        self._process = None
        return MigOracleError(f"{self.binary} stopped answering (exit {code}){': ' + detail if detail else ''}")

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one request object and return the helper's answer object."""
        line = json.dumps(payload, separators=(",", ":")) + "\n"
        with self._lock:
            process = self._start()
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(line)
                process.stdin.flush()
                answer = process.stdout.readline()
            except (BrokenPipeError, OSError):
                raise self._died(process) from None
            if not answer:
                raise self._died(process)
        return json.loads(answer)

    def validate(self, document: str) -> tuple[bool, str, list[str]]:
        """mig-parted's verdict on a config file: (valid, its error message, the config names, sorted)."""
        answer = self.request({"op": "validate", "document": document})
        if "valid" not in answer:
            raise MigOracleError(answer.get("error") or f"unexpected answer {answer}")
        return bool(answer["valid"]), answer.get("error", ""), list(answer.get("configs") or [])

    def select(self, document: str, config: str, devices: list[tuple[int, str]]) -> list[dict]:
        """For each (index, PCI device id) GPU, the entry of ``config`` mig-parted applies to it.

        Each result: ``index``, ``device_id``, ``entry`` (the last matching entry, which is what apply
        leaves on the GPU, or None), ``matches`` (every matching entry), ``mig_enabled`` and
        ``mig_devices`` of that entry (None when nothing matches). Raises MigOracleError with mig-parted's
        message when the document does not parse or has no such config.
        """
        answer = self.request({"op": "select", "document": document, "config": config,
                               "devices": [{"index": index, "device_id": device_id}
                                           for index, device_id in devices]})
        if answer.get("error"):
            raise MigOracleError(answer["error"])
        return list(answer["devices"])

    def tables(self) -> dict:
        """go-nvml's mock MIG tables by model key (e.g. ``A100-SXM4-80GB``); see ``recorded``."""
        if self._tables is None:
            answer = self.request({"op": "tables"})
            if "models" not in answer:
                raise MigOracleError(answer.get("error") or f"unexpected answer {answer}")
            self._tables = answer["models"]
        return self._tables

    def versions(self) -> dict[str, str]:
        """The Go modules linked into the helper, by module path."""
        return dict(self.request({"op": "version"})["modules"])
