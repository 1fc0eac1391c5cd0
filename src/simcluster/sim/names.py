"""Names NVIDIA's components use on the cluster, as the simulated ones write and read them.

The simulator keeps its own copy of these facts (from mig-parted's reconfigure script and
``cmd/nvidia-mig-manager``, the GPU Operator's assets and controllers, node-feature-discovery)
rather than importing the toolkit's: the two must be able to disagree.
"""

from __future__ import annotations

# -- node labels of the MIG manager's protocol (mig-parted reconfigure) -------------------------------------------
MIG_CONFIG = "nvidia.com/mig.config"
MIG_CONFIG_STATE = "nvidia.com/mig.config.state"
PENDING, REBOOTING, SUCCESS, FAILED = "pending", "rebooting", "success", "failed"

DEPLOY_PREFIX = "nvidia.com/gpu.deploy."
PAUSED = "paused-for-mig-change"

# -- labels the GPU Operator writes (controllers/state_manager.go) -------------------------------------------------
GPU_PRESENT = "nvidia.com/gpu.present"
DEPLOY_MIG_MANAGER = DEPLOY_PREFIX + "mig-manager"
DEPLOY_OPERANDS = DEPLOY_PREFIX + "operands"
# The operand labels the operator sets on every GPU node (gpuStateLabels).
OPERATOR_OPERANDS = (
    "driver", "gpu-feature-discovery", "container-toolkit", "device-plugin", "dcgm", "dcgm-exporter",
    "node-status-exporter", "operator-validator",
)

# -- labels GPU feature discovery writes that others read ----------------------------------------------------------
GPU_PRODUCT = "nvidia.com/gpu.product"
MIG_CAPABLE = "nvidia.com/mig.capable"
GFD_TIMESTAMP = "nvidia.com/gfd.timestamp"

# node-feature-discovery: a PCI device of vendor 10de (NVIDIA), by class or not.
NFD_NVIDIA_PCI = (
    "feature.node.kubernetes.io/pci-10de.present",
    "feature.node.kubernetes.io/pci-0302_10de.present",
    "feature.node.kubernetes.io/pci-0300_10de.present",
)

# -- operand pods, by the app label of the operator's DaemonSets (assets/state-*/*daemonset.yaml) --------------------
APP_DEVICE_PLUGIN = "nvidia-device-plugin-daemonset"
APP_GFD = "gpu-feature-discovery"
APP_MIG_MANAGER = "nvidia-mig-manager"
APP_DCGM_EXPORTER = "nvidia-dcgm-exporter"
APP_DCGM = "nvidia-dcgm"
APP_OPERATOR_VALIDATOR = "nvidia-operator-validator"
APP_CUDA_VALIDATOR = "nvidia-cuda-validator"
APP_PLUGIN_VALIDATOR = "nvidia-device-plugin-validator"

# -- extended resources (k8s-device-plugin internal/rm) ------------------------------------------------------------
GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"


def is_nvidia_resource(name: str) -> bool:
    return name == GPU_RESOURCE or name.startswith(MIG_RESOURCE_PREFIX)


# -- the ClusterPolicy (api/nvidia/v1) ------------------------------------------------------------------------------
POLICY_GROUP_VERSION = "nvidia.com/v1"
POLICY_PATH = "/apis/nvidia.com/v1/clusterpolicies"
DEFAULT_MIG_CONFIGMAP = "default-mig-parted-config"  # the operator's default MIG ConfigMap (assets/state-mig-manager)
