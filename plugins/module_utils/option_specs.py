# Argument-spec fragments several modules share; each mirrors the doc fragment of the same name in
# plugins/doc_fragments/ (ansible-test's validate-modules checks that docs and specs agree).

from __future__ import annotations

from typing import Any

TAINT_OPTIONS: dict[str, dict[str, Any]] = {
    "key": {"type": "str", "required": True, "no_log": False},
    "value": {"type": "str", "default": ""},
    "effect": {"type": "str", "required": True, "choices": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
}

# Which pods an evacuation selects and which the filters let go: k8s_node_evacuate and the rollout's plan
# (its check-mode listing) select alike. Doc fragment: evacuation_selection.
EVACUATION_SELECTION_SPEC: dict[str, dict[str, Any]] = {
    "gpu_only": {"type": "bool", "default": True},
    "gpu_runtime_classes": {"type": "list", "elements": "str", "default": ["nvidia"]},
    "pod_selector": {"type": "str"},
    "ignore_daemonsets": {"type": "bool", "default": True},
    "delete_emptydir_data": {"type": "bool", "default": False},
    "force": {"type": "bool", "default": False},
}

# How an evacuation runs, beside what it selects: k8s_node_evacuate's options, and mig_rollout_node's evacuation.
EVACUATION_SPEC: dict[str, dict[str, Any]] = {
    **EVACUATION_SELECTION_SPEC,
    "disable_eviction": {"type": "bool", "default": False},
    "grace_period": {"type": "int", "default": -1},
    "timeout": {"type": "int", "default": 600},
    "max_parallel": {"type": "int", "default": 10},
}

# The rollout lock a run holds (the fence, migrollout.rollout.fence): what the report reads.
FENCE_OPTIONS: dict[str, dict[str, Any]] = {
    "holder": {"type": "str", "required": True},
    "namespace": {"type": "str"},
    "state_file": {"type": "path", "required": True},
}

# The rollout a step belongs to: the lock it must still hold before it changes a node, whether it writes
# Events, the run's maintenance window. Doc fragment: rollout_lock.
ROLLOUT_LOCK_SPEC: dict[str, dict[str, Any]] = {
    "rollout_lock": {"type": "dict", "options": {
        **FENCE_OPTIONS,
        "events": {"type": "bool", "default": False},
        "slots_file": {"type": "path"},
    }},
}
