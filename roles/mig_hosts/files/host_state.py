# Run on a GPU host by the plan (python3 -c): what is installed, the persisted config, whether mig-parted asserts
# the wanted config, the rollout record. Prints one JSON object. Arguments: binary, config file, wanted config,
# the unit file.
import hashlib
import json
import os
import re
import subprocess
import sys

binary, config, wanted, unit = sys.argv[1:5]


def sha256(path):
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return ""


def text(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def release(path):
    """The release the binary says it is (``nvidia-mig-parted version v0.10.0``), or "" when there is none."""
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True)
    except OSError:
        return ""
    words = done.stdout.split()
    return words[-1] if done.returncode == 0 and words else ""


override = text("/etc/systemd/system/nvidia-mig-manager.service.d/override.conf")
persisted = re.findall(r"MIG_PARTED_SELECTED_CONFIG=([^\"\s]+)", override)
state = {"binary_sha256": sha256(binary), "config_sha256": sha256(config),
         "version": release(binary), "unit": os.path.isfile(unit),
         "service": os.path.exists("/etc/nvidia-mig-manager/service.sh"),
         "persisted": persisted[-1] if persisted else "", "record": text("/var/lib/mig-rollout/record.json"),
         "asserted": False}
if state["binary_sha256"] and state["config_sha256"] and wanted:
    done = subprocess.run([binary, "assert", "-f", config, "-c", wanted], capture_output=True)
    state["asserted"] = done.returncode == 0
print(json.dumps(state))
