#!/usr/bin/python
# Thin adapter: the logic lives in migrollout.tasks.mig_config_check.

DOCUMENTATION = r"""
module: mig_config_check
short_description: Check custom mig-parted configs against the MIG catalogue before they are installed
description:
  - Parses O(configs) (the C(mig-configs) mapping of a mig-parted file) and refuses unknown fields and
    malformed entries.
  - An entry with a C(device-filter) must fit every GPU model it names; an entry without one must fit at
    least one of the GPU models it could land on (O(models), else the MIG-capable models found on the
    cluster's nodes, else the whole catalogue). Fitting means the profiles exist on that model, their counts
    stay within each profile's maximum, and the slices add up (MIG catalogue).
  - Changes nothing.
options:
  configs:
    description: Config name to list of mig-parted entries (C(devices), C(mig-enabled), C(mig-devices), C(device-filter)).
    type: dict
    required: true
  models:
    description: GPU models (catalogue keys, aliases or GFD product names) the configs may target.
    type: list
    elements: str
extends_documentation_fragment:
  - kube_connection
  - read_only
author: NVIDIA MIG rollout toolkit maintainers
"""

EXAMPLES = r"""
- name: Refuse configs the A100s cannot hold, before installing them
  mig_config_check:
    configs:
      training-a100:
        - devices: all
          mig-enabled: true
          mig-devices: {3g.40gb: 2}
"""

RETURN = r"""
fits:
  description: For each config, the GPU models it fits.
  returned: always
  type: dict
  sample: {training-a100: [A100-SXM4-80GB, H100-SXM5-80GB]}
models:
  description: The GPU models the configs were checked against.
  returned: always
  type: list
  elements: str
problems:
  description: Every problem found, one sentence each.
  returned: failure
  type: list
  elements: str
"""

from ansible.module_utils.migrollout_loader import run_task


def main():
    run_task("migrollout.tasks.mig_config_check")


if __name__ == "__main__":
    main()
