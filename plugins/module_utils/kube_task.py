# What every module of this collection shares: connection options, error translation, execution.
#
# Each module (plugins/modules/<name>.py) is a TaskSpec: an argument spec plus a ``run`` function over plain
# data that calls the core package (migrollout). The same spec runs as an Ansible module or, on the control
# host, in-process through the action plugin of the same name (plugins/action/<name>.py, via
# plugins/plugin_utils/kube_action.py), which saves a Python start and the import of the Kubernetes client
# for every task of a long rollout.

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

try:
    from migrollout.kube import Connection, KubeClient, KubeError
    from migrollout.migsetup import SetupError
    from migrollout.nodes import NodeError, NodeGone
    from migrollout.rollout.fence import LockLost

    CORE_IMPORT_ERROR = None
except ImportError:
    CORE_IMPORT_ERROR = traceback.format_exc()

CORE_PACKAGE = "nvidia-mig-rollout"

CONNECTION_SPEC: dict[str, dict[str, Any]] = {
    "kubeconfig": {"type": "path"},
    "context": {"type": "str"},
    "host": {"type": "str"},
    "api_key": {"type": "str", "no_log": True},
    "validate_certs": {"type": "bool", "aliases": ["verify_ssl"]},
    "ca_cert": {"type": "path", "aliases": ["ssl_ca_cert"]},
}


class TaskFailed(Exception):
    """The task cannot do what was asked; ``msg`` is one sentence, ``result`` the facts gathered so far."""

    def __init__(self, msg: str, **result: Any):
        super().__init__(msg)
        self.msg = msg
        self.result = result


@dataclass
class TaskContext:
    params: dict[str, Any]
    check_mode: bool = False
    diff: bool = False
    warnings: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @cached_property
    def api(self) -> KubeClient:
        return KubeClient.connect(Connection.from_params(self.params))

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 3)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    argument_spec: dict[str, dict[str, Any]]
    run: Callable[[TaskContext], dict[str, Any]]
    mutually_exclusive: tuple[tuple[str, ...], ...] = ()
    required_if: tuple[tuple[Any, ...], ...] = ()
    required_together: tuple[tuple[str, ...], ...] = ()
    connection: bool = True

    @property
    def full_argument_spec(self) -> dict[str, dict[str, Any]]:
        return {**(CONNECTION_SPEC if self.connection else {}), **self.argument_spec}

    def validator_kwargs(self) -> dict[str, Any]:
        return {
            "mutually_exclusive": [list(x) for x in self.mutually_exclusive] or None,
            "required_if": [list(x) for x in self.required_if] or None,
            "required_together": [list(x) for x in self.required_together] or None,
        }


def execute(spec: TaskSpec, params: dict[str, Any], check_mode: bool, diff: bool) -> dict[str, Any]:
    """Run a task; never raises for cluster or input problems: they become ``failed`` results."""
    ctx = TaskContext(params=params, check_mode=check_mode, diff=diff)
    try:
        result = spec.run(ctx)
    except TaskFailed as exc:
        result = {**exc.result, "failed": True, "msg": exc.msg}
    except LockLost as exc:
        # The run no longer holds the rollout lock (or is gone): the step stopped before changing the node.
        result = {"failed": True, "msg": str(exc), "lock_lost": True}
    except KubeError as exc:
        result = {"failed": True, "msg": exc.one_line(), "status": exc.status, "reason": exc.reason}
    except NodeGone as exc:
        result = {"failed": True, "msg": str(exc), "node_gone": True}
    except (NodeError, SetupError, ValueError) as exc:
        result = {"failed": True, "msg": str(exc)}
    result.setdefault("changed", False)
    result.setdefault("duration_s", ctx.elapsed())
    if "api" in vars(ctx):  # the client was made (a cached_property): how many requests the task sent
        result["api_requests"] = ctx.api.requests
    if ctx.warnings:
        result["warnings"] = ctx.warnings
    return result


def run_module(spec: TaskSpec) -> None:
    """The ``main()`` of every module: validate the arguments, run the task, exit with its result."""
    from ansible.module_utils.basic import AnsibleModule, missing_required_lib

    module = AnsibleModule(argument_spec=spec.full_argument_spec, supports_check_mode=True,
                           **{k: v for k, v in spec.validator_kwargs().items() if v})
    if CORE_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib(CORE_PACKAGE, reason="the core of the nvidia_mig.rollout modules")
                         + " (pip install -r the collection's requirements.txt; a checkout: pip install -e .)",
                         exception=CORE_IMPORT_ERROR)
    result = execute(spec, dict(module.params), module.check_mode, module._diff)
    warnings = result.pop("warnings", [])
    for warning in warnings:
        module.warn(warning)
    if result.get("failed"):
        result.pop("failed")
        module.fail_json(**result)
    module.exit_json(**result)
