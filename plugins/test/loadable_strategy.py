# Jinja test: whether this ansible-core loads a strategy plugin. ansible-core deprecates strategy plugins from
# outside ansible.builtin; a release that stops loading them fails a play that names one only when that play starts,
# which for the rollout is after its lock was taken. The rollout asks first (playbooks/mig-reconfigure.yml).
from __future__ import annotations

from ansible.errors import AnsibleError
from ansible.plugins.loader import strategy_loader


def loadable_strategy(name) -> bool:
    """{{ 'nvidia_mig.rollout.mig_window' is nvidia_mig.rollout.loadable_strategy }}"""
    try:
        return strategy_loader.get(str(name), class_only=True) is not None
    except AnsibleError:
        return False


class TestModule:
    def tests(self):
        return {"loadable_strategy": loadable_strategy}
