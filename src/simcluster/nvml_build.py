"""Building the GPU-less NVML (``simcluster.nvml``): ``libnvidia-ml.so.1`` from ``gobuild/nvml/`` with cgo
``-buildmode=c-shared`` against go-nvml's own ``nvml.h`` (its pinned module), once, into the cache; every NVML
function the header declares that the sources do not implement gets a generated stub answering
``NVML_ERROR_NOT_SUPPORTED``."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

LIBRARY_NAME = "libnvidia-ml.so.1"
NVML_GOBUILD_DIR = Path(__file__).parent / "gobuild" / "nvml"

_DECLARATION = re.compile(r"nvmlReturn_t\s+DECLDIR\s+(nvml\w+)\s*\(([^;{]*?)\)\s*;", re.DOTALL)


def implemented_functions() -> set[str]:
    """The NVML entry points the library's own sources define."""
    names = set()
    for path in sorted(NVML_GOBUILD_DIR.glob("*.go")):
        names.update(re.findall(r"^//export (nvml\w+)$", path.read_text(), re.MULTILINE))
    for path in sorted(NVML_GOBUILD_DIR.glob("*.c")):
        names.update(re.findall(r"^(?:const\s+char\s*\*|nvmlReturn_t)\s*(nvml\w+)\(", path.read_text(), re.MULTILINE))
    return names


def not_supported_stubs(header: str, implemented: set[str]) -> tuple[str, list[str]]:
    """C definitions answering NVML_ERROR_NOT_SUPPORTED for every function ``header`` declares that the
    library does not implement, and their names."""
    header = re.sub(r"/\*.*?\*/", "", header, flags=re.DOTALL)
    header = re.sub(r"//[^\n]*", "", header)
    lines = ['#include "nvml.h"', ""]
    names = []
    for name, params in _DECLARATION.findall(header):
        if name in implemented or name in names:
            continue
        names.append(name)
        params = " ".join(params.split())
        lines.append(f"nvmlReturn_t {name}({params}) {{ return NVML_ERROR_NOT_SUPPORTED; }}")
    return "\n".join(lines) + "\n", names


# Changes whenever the way the library is built (flags, generated stubs) changes.
_BUILD_RECIPE = "c-shared -trimpath -s -w; NOT_SUPPORTED stubs for every other nvml.h function; v1"


def _inputs_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(NVML_GOBUILD_DIR.iterdir()):
        if path.suffix in (".go", ".c", ".mod"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(_BUILD_RECIPE.encode())
    return digest.hexdigest()[:12]


def library_dir() -> Path:
    from simcluster import upstream
    from simcluster.binaries import cache_root

    return cache_root() / "nvml" / f"go-nvml-{upstream.GO_NVML_VERSION}_{_inputs_digest()}"


def find() -> Path | None:
    """The built library's directory, or None."""
    directory = library_dir()
    return directory if (directory / LIBRARY_NAME).exists() and (directory / "build-info.json").exists() else None


def _go_nvml_header(go: str, scratch: Path) -> Path:
    from simcluster import upstream
    from simcluster.binaries import BuildError

    env = upstream._go_env(cgo=False)
    env["GOFLAGS"] = ""
    module = f"{upstream.GO_NVML_MODULE}@{upstream.GO_NVML_VERSION}"
    result = subprocess.run([go, "mod", "download", "-json", module], cwd=scratch, env=env,
                            capture_output=True, text=True)
    try:
        info = json.loads(result.stdout)
    except json.JSONDecodeError:
        info = {}
    if result.returncode != 0 or "Dir" not in info:
        raise BuildError(f"the Go module {module} cannot be downloaded: "
                         f"{info.get('Error') or result.stderr.strip() or result.returncode}")
    return Path(info["Dir"]) / "pkg" / "nvml"


def build(log: IO[str] = sys.stderr) -> Path:
    """Build libnvidia-ml.so.1 into the cache (nothing when it is there); return its directory."""
    from simcluster import upstream
    from simcluster.binaries import BuildError

    target = library_dir()
    if find() is not None:
        return target
    go = upstream._find_go()
    upstream._check_c_compiler(go)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="simcluster-nvml-"))
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    started = time.monotonic()
    try:
        print(f"simcluster: building {LIBRARY_NAME} (GPU-less NVML over go-nvml {upstream.GO_NVML_VERSION}'s "
              f"nvml.h; first time only; under a minute)", file=log, flush=True)
        header_dir = _go_nvml_header(go, scratch)
        source = scratch / "nvml"
        shutil.copytree(NVML_GOBUILD_DIR, source, copy_function=shutil.copy)
        stubs, stubbed = not_supported_stubs((header_dir / "nvml.h").read_text(), implemented_functions())
        (source / "not_supported.c").write_text(stubs)
        env = upstream._go_env(cgo=True)
        env["CGO_CFLAGS"] = f"{env.get('CGO_CFLAGS', '-O2 -g')} -I{header_dir}"
        result = subprocess.run([go, "build", "-trimpath", "-buildmode=c-shared", "-ldflags", "-s -w",
                                 "-o", str(staging / LIBRARY_NAME), "."],
                                cwd=source, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise upstream._failure(LIBRARY_NAME, result)
        (staging / f"{Path(LIBRARY_NAME).stem}.h").unlink(missing_ok=True)
        (staging / "libnvidia-ml.so.h").unlink(missing_ok=True)
        seconds = round(time.monotonic() - started, 1)
        (staging / "build-info.json").write_text(json.dumps({
            "go_nvml": f"{upstream.GO_NVML_MODULE}@{upstream.GO_NVML_VERSION}",
            "implemented": sorted(implemented_functions()),
            "not_supported": len(stubbed),
            "seconds": seconds,
        }, indent=2) + "\n")
        upstream.publish(staging, target, lambda: find() is not None)
    except OSError as exc:
        raise BuildError(f"building {LIBRARY_NAME} failed: {exc}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    print(f"simcluster: {LIBRARY_NAME} built in {time.monotonic() - started:.0f} s into {target}",
          file=log, flush=True)
    return target
