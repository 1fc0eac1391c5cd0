# Dynamic inventory of a Kubernetes cluster's GPU nodes (the logic: migrollout.inventory).
from __future__ import annotations

DOCUMENTATION = r"""
name: gpu_nodes
short_description: The GPU nodes of a Kubernetes cluster, grouped by GPU product and pool
description:
  - Lists the cluster's nodes that have NVIDIA GPUs (C(nvidia.com/gpu.present) or node-feature-discovery's
    PCI 10de label) as hosts named after the nodes, all in the group O(group).
  - Groups them by GPU product (C(gpu_product_<product>), from GPU feature discovery's C(nvidia.com/gpu.product))
    and by pool (C(gpu_pool_<value>), from the node label O(pool_label)), so group_vars can give a pool its
    C(mig_config).
  - Host variables C(gpu_model) (catalogue key), C(gpu_product), C(gpu_count), C(mig_capable),
    C(mig_config_current), C(mig_config_state); hosts connect locally (every call runs on the control host).
  - When the cluster cannot be listed (unreachable, a bad kubeconfig, credentials refused, an identity without
    the right to list nodes), warns and lists no GPU node, so playbooks that need none (the GPU Operator's
    install, on a cluster without GPU nodes yet) still run; it sets C(gpu_nodes_inventory_error) on every host
    (the group C(all)) to what failed, with the identity the API server saw (a SelfSubjectReview), and the
    rollout playbook fails on it.
options:
  plugin:
    description: This plugin's name.
    required: true
    choices: [nvidia_mig.rollout.gpu_nodes, gpu_nodes]
  kubeconfig:
    description: Kubeconfig path (default, E(KUBECONFIG) then C(~/.kube/config)).
    type: path
  context:
    description: Kubeconfig context.
    type: str
  group:
    description: The group every GPU node joins.
    type: str
    default: gpu_nodes
  pool_label:
    description: Node label whose value names a node's pool.
    type: str
    default: gpu-pool
  mig_capable_only:
    description: List only nodes whose GPUs support MIG (or whose GPU is not known yet).
    type: bool
    default: true
"""

EXAMPLES = r"""
# config/gpu_nodes.yml
plugin: nvidia_mig.rollout.gpu_nodes
pool_label: gpu-pool
"""

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin
from ansible.utils.display import Display

try:
    from migrollout.inventory import gpu_hosts, group_name, listing_error
    from migrollout.kube import Connection, KubeClient, KubeError

    IMPORT_ERROR = None
except ImportError as exc:  # reported when the plugin is used
    IMPORT_ERROR = exc


# A GPU node is no SSH target: the rollout's tasks for it run on the control host, with the controller's Python
# (where the action plugins run the modules in-process).
CONNECTION_VARIABLES = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}


class InventoryModule(BaseInventoryPlugin):
    NAME = "nvidia_mig.rollout.gpu_nodes"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("gpu_nodes.yml", "gpu_nodes.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        if IMPORT_ERROR is not None:
            raise AnsibleParserError(f"gpu_nodes needs the nvidia-mig-rollout Python package (pip install -r the "
                                     f"collection's requirements.txt): {IMPORT_ERROR}")
        group = self.get_option("group")
        self.inventory.add_group(group)
        api = None
        try:
            api = KubeClient.connect(Connection(kubeconfig=self.get_option("kubeconfig"),
                                                context=self.get_option("context")), request_timeout=15,
                                     retry_budget_s=10)
            hosts = gpu_hosts(api, self.get_option("pool_label"), self.get_option("mig_capable_only"))
        except KubeError as exc:
            message = listing_error(api, exc)
            Display().warning(f"gpu_nodes: {message}; no GPU node listed")
            # For every host (the rollout's first play runs on the control host and fails on it).
            self.inventory.set_variable("all", "gpu_nodes_inventory_error", message)
            return
        for host in hosts:
            name = host["name"]
            self.inventory.add_host(name, group=group)
            for key, value in {**CONNECTION_VARIABLES, **host["vars"]}.items():
                self.inventory.set_variable(name, key, value)
            for extra in host["groups"]:
                self.inventory.add_group(group_name(extra))
                self.inventory.add_child(group, group_name(extra))
                self.inventory.add_host(name, group=group_name(extra))
