"""NVIDIA's bare-metal MIG manager files (mig-parted's ``deployments/systemd``) at the mig-parted release
simcluster builds: the unit, ``service.sh``, ``utils.sh``, ``hooks.sh``, the hooks files and the default
config, as in NVIDIA's ``nvidia-mig-manager`` package. Read from the module's own zip in Go's module cache
(``go mod download`` of the pinned version; the build already fetched it), never copied into the project.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from simcluster import upstream
from simcluster.binaries import BuildError

FILES = ("nvidia-mig-manager.service", "nvidia-gpu-reset.target", "nvidia-mig-parted.sh", "override.conf",
         "service.sh", "utils.sh", "hooks.sh", "hooks-default.yaml", "config-default.yaml")


def systemd_dir() -> Path:
    go = shutil.which("go")
    if go is None:
        raise BuildError("go is not on PATH: mig-parted's deployments/systemd comes from its Go module")
    module = f"{upstream.MIG_PARTED_MODULE}@{upstream.MIG_PARTED_VERSION}"
    done = subprocess.run([go, "mod", "download", "-json", module], capture_output=True, text=True,
                          env=upstream._go_env(cgo=False), cwd=upstream.NVIDIA_GOBUILD_DIR)
    try:
        directory = Path(json.loads(done.stdout)["Dir"]) / "deployments" / "systemd"
    except (ValueError, KeyError):
        raise BuildError(f"go mod download {module} failed: {done.stderr.strip() or done.stdout.strip()}") from None
    missing = [name for name in FILES if not (directory / name).is_file()]
    if missing:
        raise BuildError(f"{directory}: mig-parted {upstream.MIG_PARTED_VERSION} ships no {missing[0]}")
    return directory
