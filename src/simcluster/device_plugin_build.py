"""Building ``device-plugin-probe``: NVIDIA's k8s-device-plugin, at the version the pinned GPU Operator's chart
deploys, asked what it makes of a node's GPUs through the GPU-less NVML (``gobuild/_device-plugin/``).

The probe calls the device plugin's internal packages (its resource managers, its NVML device layer), which Go
lets only code inside that module import: so the module is downloaded (checked against its go.sum hash), copied
to a scratch directory, the probe's one source file is added as ``cmd/device-plugin-probe``, and it is built
there with the module's own go.mod and go.sum, once, into the cache.

GPU feature discovery's own binary (``cmd/gpu-feature-discovery`` of the same module) cannot be built here: its
labeler imports node-feature-discovery v0.15.7, which the module proxy refuses (403). The probe's ``devices``
answer is what GFD's labelers read (the same ``internal/resource`` manager over NVML); the labels are written
from it by ``sim.feature_discovery``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

DEVICE_PLUGIN_MODULE = "github.com/NVIDIA/k8s-device-plugin"
# The chart's devicePlugin.version and gfd.version (tests/conformance checks they agree).
DEVICE_PLUGIN_VERSION = "v0.17.4"
DEVICE_PLUGIN_SUM = "h1:5yFNndt80sH91ZuWPVWuO4uXF2W4oLolqwkQnK6ZVUs="
PROBE_NAME = "device-plugin-probe"
PROBE_SOURCE_DIR = Path(__file__).parent / "gobuild" / "_device-plugin" / PROBE_NAME

_BUILD_RECIPE = "cgo -trimpath -s -w inside the module copy; v1"


def _inputs_digest() -> str:
    digest = hashlib.sha256(_BUILD_RECIPE.encode())
    for path in sorted(PROBE_SOURCE_DIR.glob("*.go")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def probe_dir() -> Path:
    from simcluster.binaries import cache_root

    return cache_root() / "device-plugin" / f"k8s-device-plugin-{DEVICE_PLUGIN_VERSION}_{_inputs_digest()}"


def find() -> Path | None:
    """The built probe, or None."""
    probe = probe_dir() / PROBE_NAME
    return probe if probe.exists() and (probe_dir() / "build-info.json").exists() else None


def build(log: IO[str] = sys.stderr) -> Path:
    """Build the probe into the cache (nothing when it is there); return its path."""
    from simcluster import upstream
    from simcluster.binaries import BuildError

    built = find()
    if built is not None:
        return built
    target = probe_dir()
    go = upstream._find_go()
    upstream._check_c_compiler(go)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="simcluster-device-plugin-"))
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    started = time.monotonic()
    try:
        print(f"simcluster: building {PROBE_NAME} (inside {DEVICE_PLUGIN_MODULE}@{DEVICE_PLUGIN_VERSION}; "
              f"first time only; about a minute on 2 cores)", file=log, flush=True)
        module = upstream.download_module(go, DEVICE_PLUGIN_MODULE, DEVICE_PLUGIN_VERSION, DEVICE_PLUGIN_SUM,
                                          scratch)
        source = scratch / "k8s-device-plugin"
        upstream.copy_tree(module, source)
        shutil.copytree(PROBE_SOURCE_DIR, source / "cmd" / PROBE_NAME, copy_function=shutil.copy)
        upstream._run(PROBE_NAME, [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(staging / PROBE_NAME),
                                   f"./cmd/{PROBE_NAME}"], cwd=source, env=upstream._go_env(cgo=True))
        (staging / "build-info.json").write_text(json.dumps({
            "device_plugin": f"{DEVICE_PLUGIN_MODULE}@{DEVICE_PLUGIN_VERSION}",
            "seconds": round(time.monotonic() - started, 1),
        }, indent=2) + "\n")
        upstream.publish(staging, target, lambda: find() is not None)
    except OSError as exc:
        raise BuildError(f"building {PROBE_NAME} failed: {exc}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    print(f"simcluster: {PROBE_NAME} built in {time.monotonic() - started:.0f} s into {target}", file=log, flush=True)
    return target / PROBE_NAME
