# Action-plugin side of the modules: run them in-process on the control host.
#
# Ansible loads action plugins in its main process before forking a worker per task, so the Kubernetes
# client imported here is loaded once per playbook run instead of once per task. Anything that does not run
# on the control host (a non-local connection), or MIGROLLOUT_IN_PROCESS=0, executes the module the usual way.

from __future__ import annotations

import json
import os
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.nvidia_mig.rollout.plugins.module_utils.kube_task import (
    CORE_IMPORT_ERROR,
    CORE_PACKAGE,
    TaskSpec,
    execute,
)

COLLECTION = "ansible_collections.nvidia_mig.rollout"

IN_PROCESS_VARIABLE = "MIGROLLOUT_IN_PROCESS"


class KubeTaskAction(ActionBase):
    """Subclasses set ``SPEC`` to the task they run."""

    SPEC: TaskSpec
    _supports_check_mode = True
    _supports_async = False

    def _runs_here(self) -> bool:
        if os.environ.get(IN_PROCESS_VARIABLE, "1") == "0":
            return False
        return getattr(self._connection, "transport", "") == "local"

    def _apply_task_environment(self) -> None:
        # A module sees the task's `environment:`; in-process this worker process (forked for
        # this one task) gets the same variables.
        environment: dict[str, Any] = {}
        self._compute_environment_string(raw_environment_out=environment)
        for key, value in environment.items():
            os.environ[str(key)] = str(value)

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        if not self._runs_here():
            result.update(self._execute_module(module_name=self._task.action, module_args=self._task.args,
                                               task_vars=task_vars))
            return result
        if CORE_IMPORT_ERROR is not None:
            return {**result, "failed": True, "exception": CORE_IMPORT_ERROR,
                    "msg": f"the {CORE_PACKAGE} Python package (the core of this collection's modules) cannot be "
                           f"imported by the controller's Python: pip install -r the collection's requirements.txt"}
        try:
            _, params = self.validate_argument_spec(self.SPEC.full_argument_spec, **self.SPEC.validator_kwargs())
        except AnsibleActionFail as exc:
            return {**result, "failed": True, "msg": str(exc.message)}
        self._apply_task_environment()
        # A module receives its arguments as JSON; give the task the same plain data (Ansible's templating
        # hands over tagged str/dict subclasses that, e.g., yaml.safe_dump refuses).
        params = json.loads(json.dumps(params))
        outcome = execute(self.SPEC, params, bool(self._task.check_mode), bool(self._task.diff))
        result.update(outcome)
        return result


def action_for(module: str) -> type[KubeTaskAction]:
    """The action plugin class for the module ``module`` of this collection (its ``SPEC``)."""
    import importlib

    spec = importlib.import_module(f"{COLLECTION}.plugins.modules.{module}").SPEC
    return type(f"{spec.name}_action", (KubeTaskAction,), {"SPEC": spec})
