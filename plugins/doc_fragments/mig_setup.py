# Where a node's MIG settings come from, when the caller already knows (migrollout.migsetup).


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  operator_namespace:
    description: The GPU Operator's namespace. Default, the ClusterPolicy's C(status.namespace).
    type: str
  config_map:
    description:
      - The MIG config ConfigMap. Default, the one the node's MIG manager uses (the one named in the ClusterPolicy;
        else C(<node>-mig-config), which MIG managers from v0.14 publish; else C(default-mig-parted-config)).
    type: str
"""
