"""The bare-metal path (playbooks/nvidia-mig.yml): which GPU hosts to reconfigure, in which order, and the report.

Pure. The hosts' facts come from the preflight, read over SSH before any host is touched: each host's GPUs
(``nvidia-smi --query-gpu``), whether NVIDIA's mig-parted and MIG manager service are installed as this run
would install them, the config its service has persisted (``override.conf``), whether mig-parted's
``assert`` of the wanted config passes, the rollout record left by an interrupted run, and its Slurm node
record. The rolling rules are the Kubernetes path's (:mod:`migrollout.rollout.schedule`: the window, per-pool
budgets, the failure budget, the resume order) and the report is its format (:mod:`migrollout.rollout.report`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from migrollout import catalogue
from migrollout.migconfig import document, layouts
from migrollout.rollout import report
from migrollout.rollout.record import Record
from migrollout.rollout.schedule import Schedule, rollout_order

SMI_FIELDS = ("index", "pci.bus_id", "name", "mig.mode.current", "mig.mode.pending")
SMI_QUERY = f"--query-gpu={','.join(SMI_FIELDS)}"
# Steps of a host, named as the report's columns (the Kubernetes path's): maintenance = drain the Slurm node,
# evacuate = wait for its jobs, label = install and apply, verify = assert and Slurm's GRES, finish = resume.
STEP_MARKS = (("maintenance", "started", "drained"), ("evacuate", "drained", "jobs_done"),
              ("label", "jobs_done", "applied"), ("verify", "applied", "verified"), ("finish", "verified", "finished"))


class PlanError(ValueError):
    """The run cannot start; the message names the hosts and why."""


def parse_gpus(text: str) -> list[dict[str, str]]:
    """``nvidia-smi --query-gpu=index,pci.bus_id,name,mig.mode.current,mig.mode.pending --format=csv,noheader``."""
    gpus = []
    for line in text.strip().splitlines():
        values = [value.strip() for value in line.split(",")]
        if len(values) != len(SMI_FIELDS):
            raise PlanError(f"unexpected nvidia-smi line: {line!r}")
        gpus.append(dict(zip(("index", "bus_id", "product", "mig_current", "mig_pending"), values, strict=True)))
    return gpus


def fit_problems(config_text: str, name: str, gpus: list[dict[str, str]], mig_parted_version: str) -> list[str]:
    """Why config ``name`` of this mig-parted config file cannot be applied to these GPUs ("" when it can):
    what mig-parted's parser of that release refuses, and profiles that do not exist or fit on the model."""
    if not gpus:
        return ["no NVIDIA GPU found (nvidia-smi lists none)"]
    products = sorted({gpu["product"] for gpu in gpus})
    if len(products) > 1:
        return [f"GPUs of several models ({', '.join(products)}): not supported"]
    # The catalogue knows a GPU by GPU feature discovery's product label: NVML's name with dashes for spaces.
    model = catalogue.find_model(products[0].replace(" ", "-"))
    if model is None:
        return [f"GPU model {products[0]} is not in the MIG catalogue"]
    if not model.mig_capable:
        return [f"{products[0]} is not MIG-capable"]
    try:
        config = document.parse_config_text(config_text, document.Dialect.for_mig_manager(mig_parted_version))
    except document.MigConfigError as exc:
        return [f"the MIG config file is refused by mig-parted {mig_parted_version}: {exc}"]
    return layouts.fit_problems(config, name, model, len(gpus))


INSTALL_SOURCES = ("files", "package", "url")


def installed(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether a host has NVIDIA's mig-parted and service as this run would install them.

    ``found``, what the preflight read on the host: ``binary_sha256`` and ``version`` (``nvidia-mig-parted
    --version``'s release) of the binary where the source puts it, ``config_sha256`` of its ``config.yaml``,
    ``unit`` and ``service`` (the unit file and NVIDIA's ``service.sh`` exist). ``wanted``: ``source`` (files,
    package, url), ``mig_parted_version``, ``binary_sha256`` (files only: the control host's binary) and
    ``config_sha256`` (the control host's config file). The files source has the very binary to compare with; a
    package or an archive is fetched by the host itself, so its release is what is compared."""
    source = wanted.get("source")
    if source not in INSTALL_SOURCES:
        raise PlanError(f"unknown install source {source!r} (one of {', '.join(INSTALL_SOURCES)})")
    if source == "files":
        same_binary = bool(found.get("binary_sha256")) and found.get("binary_sha256") == wanted.get("binary_sha256")
    else:
        same_binary = bool(found.get("version")) and found.get("version") == wanted.get("mig_parted_version")
    same_config = bool(found.get("config_sha256")) and found.get("config_sha256") == wanted.get("config_sha256")
    return same_binary and same_config and bool(found.get("unit")) and bool(found.get("service"))


def read_record(text: str) -> Record | None:
    try:
        return Record.decode(text) if text.strip() else None
    except (ValueError, TypeError):
        return None


def plan(hosts: Mapping[str, Mapping[str, Any]], checked_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The run's plan. ``hosts``: name -> facts (``pool``, ``mig_config``, ``unreachable``, ``problems``,
    ``installed`` (bool), ``persisted`` (config or ""), ``asserted`` (bool), ``record`` (JSON text or ""),
    ``slurm_admin_drained`` (bool)). Raises PlanError when a host cannot be reconfigured (nothing is touched)."""
    refused = []
    items: dict[str, dict[str, Any]] = {}
    for name, facts in hosts.items():
        wanted = str(facts.get("mig_config") or "")
        base = {"node": name, "pool": str(facts.get("pool") or ""), "from_config": str(facts.get("persisted") or ""),
                "to_config": wanted, "slurm_admin_drained": bool(facts.get("slurm_admin_drained"))}
        if facts.get("unreachable"):
            items[name] = {**base, "action": "unreachable", "reason": str(facts["unreachable"])}
            continue
        if not wanted:
            items[name] = {**base, "action": "skip", "reason": "no mig_config for this host"}
            continue
        problems = list(facts.get("problems") or [])
        if problems:
            refused.append(f"{name}: {wanted}: {'; '.join(problems)}")
            continue
        record = read_record(str(facts.get("record") or ""))
        if record is not None and record.step == "failed" and record.to_config == wanted:
            items[name] = {**base, "action": "resume", "reason": f"failed in an earlier run ({record.error}); again",
                           "record": json.loads(record.encode())}
        elif record is not None:
            items[name] = {**base, "action": "resume", "from_config": record.from_config,
                           "reason": f"an earlier run ({record.run}) stopped in {record.step}; finishing it",
                           "record": json.loads(record.encode())}
        elif facts.get("installed") and facts.get("asserted") and facts.get("persisted") == wanted:
            items[name] = {**base, "action": "skip", "reason": f"already at {wanted}"}
        else:
            why = [] if facts.get("installed") else ["mig-parted and its service to install"]
            if not facts.get("asserted"):
                why.append(f"MIG layout is not {wanted}")
            elif facts.get("persisted") != wanted:
                why.append(f"the boot-time service would apply {facts.get('persisted') or 'nothing'}")
            items[name] = {**base, "action": "change", "reason": "; ".join(why)}
    if refused:
        raise PlanError("the run does not start, no host was touched: " + " | ".join(refused))
    resume = [name for name, item in items.items() if item["action"] == "resume"]
    planned = [name for name, _ in rollout_order([n for n, i in items.items() if i["action"] in ("change", "resume")],
                                                 resume=resume)]
    pools = {name: item["pool"] for name, item in items.items()}
    sizes: dict[str, int] = {}
    for item in items.values():
        sizes[item["pool"]] = sizes.get(item["pool"], 0) + 1
    already_out: dict[str, set[str]] = {}
    for name, item in items.items():
        if item["slurm_admin_drained"]:
            already_out.setdefault(item["pool"], set()).add(name)
    schedule = Schedule.from_settings(planned, {n: pools[n] for n in planned}, checked_settings, pool_sizes=sizes,
                                      already_out=already_out)
    order = planned + [name for name in items if name not in planned]
    ordered = [items[name] for name in order]
    return {"plan": ordered, "schedule": schedule.as_dict(), "lines": plan_lines(ordered)}


def plan_lines(items: list[dict[str, Any]]) -> list[str]:
    lines = []
    for item in items:
        change = f"{item['from_config'] or '-'} -> {item['to_config'] or '-'}"
        lines.append(f"{item['node']}: {item['action']} ({change}): {item['reason']}")
    return lines


def _seconds(marks: Mapping[str, float], start: str, end: str) -> float:
    if start in marks and end in marks:
        return max(0.0, float(marks[end]) - float(marks[start]))
    return 0.0


def report_rows(items: list[dict[str, Any]], results: Mapping[str, Mapping[str, Any]],
                slots: Mapping[str, Mapping[str, Any]], not_started: Mapping[str, str],
                planned_only: bool = False) -> list[dict[str, Any]]:
    """One row per host in the Kubernetes path's report format (:func:`migrollout.rollout.report.table`)."""
    rows = []
    for item in items:
        base = {"node": item["node"], "from": item["from_config"], "to": item["to_config"]}
        action = item["action"]
        if action == "skip":
            rows.append({**base, "result": "skipped", "reason": item["reason"], "steps": {}, "evicted": []})
            continue
        if action == "unreachable":
            rows.append({**base, "result": "failed", "reason": item["reason"], "steps": {}, "evicted": []})
            continue
        if planned_only:
            rows.append({**base, "result": f"would {action}", "reason": item["reason"], "steps": {}, "evicted": []})
            continue
        slot = slots.get(item["node"]) or {}
        times = {"started": slot.get("started", ""), "finished": slot.get("finished", "")}
        result = results.get(item["node"])
        if result is None:
            reason = not_started.get(item["node"]) or "the rollout stopped before this host"
            rows.append({**base, "result": "not started", "reason": reason, "steps": {}, "evicted": [], **times})
            continue
        marks = result.get("marks") or {}
        steps = {step: _seconds(marks, start, end) for step, start, end in STEP_MARKS}
        outcome = "failed" if result.get("failed") else ("resumed" if action == "resume" else "done")
        rows.append({**base, "result": outcome, "reason": str(result.get("error") or ""), "steps": steps,
                     "evicted": list(result.get("jobs_waited") or []), "ssh_round_trips": result.get("round_trips"),
                     **times})
    return rows


def report_text(rows: list[dict[str, Any]]) -> list[str]:
    return report.table(rows)


def summary(rows: list[dict[str, Any]]) -> dict[str, int]:
    return report.summary(rows)
