"""Which container images the simulated kubelet can really run, and what is inside them.

One table (``IMAGES``): an image is known by its repository path (any registry, any tag),
and only the commands listed for it are run for real; every other pod stays simulated.
Each image's filesystem is described as data (where a file of the image comes from on this
machine), following NVIDIA's Dockerfile for the GPU Operator image (``docker/Dockerfile`` of
the pinned module): the controller at /usr/bin/gpu-operator, ``assets/`` at /opt/gpu-operator,
``manifests/`` at /opt/gpu-operator/manifests, the CRDs at /opt/gpu-operator/*.yaml, kubectl at
/usr/local/bin/kubectl, a shell, and the unprivileged user ``gpu-operator``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Sources an image file can come from (resolved by ``image_files``):
#   "operator"             the GPU Operator controller built from the pinned module
#   "assets/*"             every entry of the module's assets/ directory
#   "manifests"            the module's manifests/ directory
#   "chart:<path>"         a file of the module's Helm chart
#   "kubectl"              the cluster's own kubectl
OPERATOR = "operator"
ASSETS = "assets/*"
MANIFESTS = "manifests"
KUBECTL = "kubectl"


@dataclass(frozen=True)
class Image:
    name: str
    path: str                                  # repository path without registry, e.g. "nvidia/gpu-operator"
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    # Command name or path -> the file in the image that runs (only these run for real).
    executables: dict[str, str]
    files: tuple[tuple[str, str], ...]         # (source, path in the image)
    user: tuple[str, int, int, str]            # name, uid, gid, home
    env: tuple[tuple[str, str], ...] = ()


_SHELLS = {"sh": "/bin/sh", "/bin/sh": "/bin/sh", "/usr/bin/sh": "/bin/sh",
           "bash": "/bin/bash", "/bin/bash": "/bin/bash", "/usr/bin/bash": "/bin/bash"}

GPU_OPERATOR = Image(
    name="gpu-operator",
    path="nvidia/gpu-operator",
    entrypoint=("/usr/bin/gpu-operator",),
    cmd=(),
    executables={
        "gpu-operator": "/usr/bin/gpu-operator", "/usr/bin/gpu-operator": "/usr/bin/gpu-operator",
        "kubectl": "/usr/local/bin/kubectl", "/usr/local/bin/kubectl": "/usr/local/bin/kubectl",
        **_SHELLS,
    },
    files=(
        (OPERATOR, "/usr/bin/gpu-operator"),
        (ASSETS, "/opt/gpu-operator"),
        (MANIFESTS, "/opt/gpu-operator/manifests"),
        ("chart:crds/nvidia.com_clusterpolicies.yaml", "/opt/gpu-operator/nvidia.com_clusterpolicies.yaml"),
        ("chart:crds/nvidia.com_nvidiadrivers.yaml", "/opt/gpu-operator/nvidia.com_nvidiadrivers.yaml"),
        ("chart:charts/node-feature-discovery/crds/nfd-api-crds.yaml", "/opt/gpu-operator/nfd-api-crds.yaml"),
        (KUBECTL, "/usr/local/bin/kubectl"),
    ),
    # The Dockerfile's `useradd gpu-operator` in a UBI 9 base: the first regular uid.
    user=("gpu-operator", 1000, 1000, "/home/gpu-operator"),
    env=(("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
         ("NVIDIA_VISIBLE_DEVICES", "void")),
)

IMAGES: tuple[Image, ...] = (GPU_OPERATOR,)

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def repository_path(reference: str) -> str:
    """``nvcr.io/nvidia/gpu-operator:v25.3.0`` -> ``nvidia/gpu-operator`` (registry, tag and digest dropped)."""
    ref = _DIGEST.sub("", reference.strip())
    head, _, rest = ref.partition("/")
    if rest and ("." in head or ":" in head or head == "localhost"):
        ref = rest
    last = ref.rsplit("/", 1)
    if ":" in last[-1]:
        ref = ref[: ref.rindex(":")]
    return ref


def find_image(reference: str) -> Image | None:
    path = repository_path(reference)
    return next((image for image in IMAGES if image.path == path), None)


def argv(container: dict[str, Any], image: Image) -> list[str]:
    """The process a container runs, by Kubernetes' rules: ``command`` replaces the image's
    ENTRYPOINT (and drops its CMD); ``args`` replaces CMD."""
    command = container.get("command")
    args = container.get("args")
    if command:
        return [str(part) for part in command] + [str(part) for part in args or []]
    return [*image.entrypoint, *([str(part) for part in args] if args is not None else image.cmd)]


def executable(container: dict[str, Any], image: Image) -> str | None:
    """The file in the image the container executes, or None when the simulator cannot run it."""
    process = argv(container, image)
    return image.executables.get(process[0]) if process else None


@dataclass(frozen=True)
class Runnable:
    """Why a pod runs for real or stays simulated (``reason`` says which container is not runnable)."""

    real: bool
    reason: str = ""
    images: dict[str, Image] = field(default_factory=dict)  # container name -> image


def classify(pod: dict[str, Any]) -> Runnable:
    """A pod runs for real only when every one of its containers (init containers too) is runnable."""
    spec = pod.get("spec") or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    if not containers:
        return Runnable(False, "no containers")
    images: dict[str, Image] = {}
    for container in containers:
        image = find_image(str(container.get("image", "")))
        if image is None:
            return Runnable(False, f"container {container.get('name')}: image {container.get('image')!r} is simulated")
        if executable(container, image) is None:
            process = argv(container, image)
            return Runnable(False, f"container {container.get('name')}: {process[0] if process else '(nothing)'} "
                                   f"is not a command simcluster runs in {image.name}")
        if container.get("restartPolicy") == "Always":
            return Runnable(False, f"init container {container.get('name')}: sidecar containers are simulated")
        images[container["name"]] = image
    return Runnable(True, images=images)


class SourcesUnavailable(RuntimeError):
    """The files of an image are not on this machine (e.g. the GPU Operator is not built yet)."""


@dataclass(frozen=True)
class Sources:
    """Where an image's files are on this machine."""

    operator: Path
    assets: Path
    manifests: Path
    chart: Path
    kubectl: Path


def image_files(image: Image, sources: Sources) -> list[tuple[str, str]]:
    """(host path, path in the container) for every file or directory of the image, in mount order."""
    result: list[tuple[str, str]] = []
    for source, target in image.files:
        if source == OPERATOR:
            result.append((str(sources.operator), target))
        elif source == KUBECTL:
            result.append((str(sources.kubectl), target))
        elif source == MANIFESTS:
            result.append((str(sources.manifests), target))
        elif source == ASSETS:
            # `COPY assets /opt/gpu-operator/` copies the directory's entries, not the directory.
            for entry in sorted(sources.assets.iterdir()):
                result.append((str(entry), f"{target}/{entry.name}"))
        elif source.startswith("chart:"):
            result.append((str(sources.chart / source.removeprefix("chart:")), target))
        else:
            raise ValueError(f"image {image.name}: unknown file source {source!r}")
    return result


def passwd(image: Image) -> tuple[str, str]:
    """The image's /etc/passwd and /etc/group."""
    name, uid, gid, home = image.user
    users = f"root:x:0:0:root:/root:/bin/sh\n{name}:x:{uid}:{gid}::{home}:/bin/sh\n"
    groups = f"root:x:0:\n{name}:x:{gid}:\n"
    return users, groups


def local_sources() -> Sources:
    """The files of the known images as built on this machine (``simcluster build``)."""
    from simcluster import binaries, upstream  # the daemon's view of the build cache

    built = upstream.find()
    if built is None:
        raise SourcesUnavailable(f"the GPU Operator is not built (expected in {upstream.upstream_dir()}): "
                                 f"run 'simcluster build'")
    kube = binaries.find()
    if kube is None:
        raise SourcesUnavailable("kubectl is not built: run 'simcluster build'")
    return Sources(operator=built.operator, assets=built.assets, manifests=built.manifests, chart=built.chart,
                   kubectl=Path(kube.path("kubectl")))
