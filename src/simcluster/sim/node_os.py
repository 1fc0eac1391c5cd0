"""The operating system of every simulated node: Ubuntu 22.04 with containerd, in one place.

The same facts show in the Node's ``status.nodeInfo`` (the kubelet reports them), in
node-feature-discovery's labels (the operator picks driver images by OS and kernel from them),
and in the node's own /etc/os-release, which hostPath volumes see (the operator reads it at
/host-etc/os-release).
"""

from __future__ import annotations

from pathlib import Path

OS_ID = "ubuntu"
VERSION_ID = "22.04"
PRETTY_NAME = "Ubuntu 22.04.5 LTS"
KERNEL = "5.15.0-143-generic"
CONTAINER_RUNTIME = "containerd://1.7.27"  # the operator configures its toolkit by runtime name

OS_RELEASE = f"""PRETTY_NAME="{PRETTY_NAME}"
NAME="Ubuntu"
VERSION_ID="{VERSION_ID}"
VERSION="22.04.5 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID={OS_ID}
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=jammy
"""

NFD = "feature.node.kubernetes.io/"


def node_info() -> dict[str, str]:
    return {"osImage": PRETTY_NAME, "kernelVersion": KERNEL, "containerRuntimeVersion": CONTAINER_RUNTIME,
            "operatingSystem": "linux", "architecture": "amd64"}


def nfd_labels() -> dict[str, str]:
    """The system labels node-feature-discovery's worker publishes for this OS and kernel."""
    major, minor = VERSION_ID.split(".")
    kernel_major, kernel_minor, kernel_revision = KERNEL.split("-")[0].split(".")
    return {
        NFD + "system-os_release.ID": OS_ID,
        NFD + "system-os_release.VERSION_ID": VERSION_ID,
        NFD + "system-os_release.VERSION_ID.major": major,
        NFD + "system-os_release.VERSION_ID.minor": minor,
        NFD + "kernel-version.full": KERNEL,
        NFD + "kernel-version.major": kernel_major,
        NFD + "kernel-version.minor": kernel_minor,
        NFD + "kernel-version.revision": kernel_revision,
    }


def host_root(nodes_dir: Path, node: str) -> Path:
    """The node's host filesystem, as far as pods see it through hostPath volumes (made on first use)."""
    root = nodes_dir / node
    release = root / "etc" / "os-release"
    if not release.exists():
        release.parent.mkdir(parents=True, exist_ok=True)
        release.write_text(OS_RELEASE)
    return root
