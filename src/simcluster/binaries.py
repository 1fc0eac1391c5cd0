"""Build and cache the real control-plane binaries from pinned Go modules.

One wrapper module (``gobuild/``: go.mod and go.sum pin every dependency)
builds a multi-call ``kube`` binary (kube-apiserver, kube-controller-manager,
kube-scheduler, kubectl and etcd, each the unmodified upstream command) and
helm. Binaries are cached outside the repository in a directory keyed by the
versions and a hash of the build inputs, so a second start costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "1.34.4"
ETCD_VERSION = "3.6.4"  # the version k8s.io/kubernetes v1.34.4 pins in its go.mod
HELM_VERSION = "3.19.5"  # the v3 release built against Kubernetes 0.34 libraries

KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd")
GOBUILD_DIR = Path(__file__).parent / "gobuild"


class BuildError(RuntimeError):
    pass


def cache_root() -> Path:
    explicit = os.environ.get("SIMCLUSTER_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "simcluster"


def _inputs_digest() -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((GOBUILD_DIR / name).read_bytes())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class Binaries:
    directory: Path

    def path(self, command: str) -> str:
        return str(self.directory / command)

    @property
    def complete(self) -> bool:
        return all((self.directory / name).exists() for name in (*KUBE_COMMANDS, "helm"))


def binaries_dir() -> Path:
    key = f"k8s-v{KUBERNETES_VERSION}_etcd-v{ETCD_VERSION}_helm-v{HELM_VERSION}_{_inputs_digest()}"
    return cache_root() / "bin" / key


def _kube_ldflags() -> str:
    major, minor, _ = KUBERNETES_VERSION.split(".")
    version_pkg = "k8s.io/component-base/version"
    flags = [
        "-s", "-w",
        f"-X {version_pkg}.gitVersion=v{KUBERNETES_VERSION}",
        f"-X {version_pkg}.gitMajor={major}",
        f"-X {version_pkg}.gitMinor={minor}",
        f"-X {version_pkg}.gitTreeState=clean",
        f"-X {version_pkg}.gitCommit=0000000000000000000000000000000000000000",
        f"-X {version_pkg}.buildDate=1970-01-01T00:00:00Z",
        f"-X k8s.io/client-go/pkg/version.gitVersion=v{KUBERNETES_VERSION}",
    ]
    return " ".join(flags)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # Never let go fetch another toolchain, never edit the pinned go.mod/go.sum, static binaries.
    env.update({"GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly", "CGO_ENABLED": "0"})
    return env


def build(log=sys.stderr) -> Binaries:
    """Build the binaries into the cache (no-op when already there)."""
    target = binaries_dir()
    binaries = Binaries(target)
    if binaries.complete:
        return binaries
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            f"control-plane binaries are missing from {target} and cannot be built: the 'go' command is not on PATH"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    started = time.monotonic()
    steps = [
        ("kube (apiserver, controller-manager, scheduler, kubectl, etcd)",
         [go, "build", "-trimpath", "-ldflags", _kube_ldflags(), "-o", str(staging / "kube"), "."]),
        ("helm",
         [go, "build", "-trimpath", "-ldflags",
          f"-s -w -X helm.sh/helm/v3/internal/version.version=v{HELM_VERSION}",
          "-o", str(staging / "helm"), "helm.sh/helm/v3/cmd/helm"]),
    ]
    try:
        for label, command in steps:
            print(f"simcluster: building {label} (first time only; tens of minutes on 2 cores)", file=log, flush=True)
            result = subprocess.run(command, cwd=GOBUILD_DIR, env=_go_env(), capture_output=True, text=True)
            if result.returncode != 0:
                tail = "\n".join(result.stderr.strip().splitlines()[-15:])
                raise BuildError(f"building {label} failed (exit {result.returncode}):\n{tail}")
        for name in KUBE_COMMANDS:
            (staging / name).symlink_to("kube")
        if target.exists():
            shutil.rmtree(target)
        staging.chmod(0o755)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    print(f"simcluster: binaries built in {time.monotonic() - started:.0f} s into {target}", file=log, flush=True)
    return binaries


def find() -> Binaries | None:
    binaries = Binaries(binaries_dir())
    return binaries if binaries.complete else None
