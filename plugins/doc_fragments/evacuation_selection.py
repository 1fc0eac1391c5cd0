# Which pods an evacuation selects and which the filters let go (one source: migrollout.tasks.evacuate.SELECTION_SPEC).


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  gpu_only:
    description:
      - Select only GPU workloads, pods whose containers or init containers request C(nvidia.com/gpu) or any
        C(nvidia.com/mig-*) resource, or that use a runtime class in O(gpu_runtime_classes).
      - V(false) selects every pod on the node (then the filters apply).
    type: bool
    default: true
  gpu_runtime_classes:
    description: Runtime classes whose pods count as GPU workloads even without a GPU resource request.
    type: list
    elements: str
    default: [nvidia]
  pod_selector:
    description: A label selector (C(app=train,tier!=web)) that narrows the selection.
    type: str
  ignore_daemonsets:
    description: Skip DaemonSet pods instead of refusing them.
    type: bool
    default: true
  delete_emptydir_data:
    description: Evict pods with emptyDir volumes (their data is lost).
    type: bool
    default: false
  force:
    description: Evict pods no controller manages (they are not recreated) and pods of deleted DaemonSets.
    type: bool
    default: false
"""
