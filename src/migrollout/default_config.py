"""Generate the operator's ``default-mig-parted-config`` from the catalogue.

It follows the rules of NVIDIA's shipped default: ``all-disabled``, ``all-enabled``,
one ``all-<profile>`` per profile at its maximum count (with device filters only
where the same profile name has different maximums on different GPUs), and an
``all-balanced`` entry per GPU family with device filters.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import yaml

from migrollout.catalogue import MODELS, GpuModel, MigProfile

DEFAULT_CONFIGMAP_NAME = "default-mig-parted-config"


def config_name_for_profile(profile_name: str) -> str:
    return "all-" + profile_name.replace("+", ".")


def _balanced(model: GpuModel) -> dict[str, int]:
    def best(compute: int) -> MigProfile | None:
        plain = [p for p in model.profiles if p.compute_slices == compute and "+" not in p.name and "-" not in p.name]
        return max(plain, key=lambda p: p.max_count, default=None)

    layout: dict[str, int] = {}
    small, two, three = best(1), best(2), best(3)
    if small:
        layout[small.name] = 2
    if two:
        layout[two.name] = 1
    if three and model.compute_slices == 7:
        layout[three.name] = 1
    return layout


def build_default_config() -> dict[str, Any]:
    configs: dict[str, list[dict[str, Any]]] = {
        "all-disabled": [{"devices": "all", "mig-enabled": False}],
        "all-enabled": [{"devices": "all", "mig-enabled": True, "mig-devices": {}}],
    }
    mig_models = [model for model in MODELS if model.mig_capable]

    # profile name -> max count -> device filters of the models with that maximum
    by_profile: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for model in mig_models:
        for profile in model.profiles:
            filters = by_profile[profile.name][profile.max_count]
            if model.device_filter not in filters:
                filters.append(model.device_filter)
    for profile_name, by_count in by_profile.items():
        name = config_name_for_profile(profile_name)
        if len(by_count) == 1:
            (count,) = by_count
            configs[name] = [{"devices": "all", "mig-enabled": True, "mig-devices": {profile_name: count}}]
        else:
            configs[name] = [
                {"device-filter": filters, "devices": "all", "mig-enabled": True, "mig-devices": {profile_name: count}}
                for count, filters in sorted(by_count.items())
            ]

    balanced: dict[tuple[tuple[str, int], ...], list[str]] = defaultdict(list)
    for model in mig_models:
        key = tuple(sorted(_balanced(model).items()))
        if model.device_filter not in balanced[key]:
            balanced[key].append(model.device_filter)
    configs["all-balanced"] = [
        {"device-filter": filters, "devices": "all", "mig-enabled": True, "mig-devices": dict(layout)}
        for layout, filters in balanced.items()
    ]
    return {"version": "v1", "mig-configs": configs}


def default_config_yaml() -> str:
    return yaml.safe_dump(build_default_config(), sort_keys=False, default_flow_style=False)
