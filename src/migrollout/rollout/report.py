"""The rollout report: one entry per node, as JSON and as a table an operator can read."""

from __future__ import annotations

import datetime
from typing import Any

from migrollout.timestamps import micro_time_text, parse

STEPS = ("maintenance", "evacuate", "label", "verify", "finish")
# The parts of each task, in the order they run from the task's ``began`` (mig_rollout_node, mig_node_label), and the
# report's step each is counted in (the capacity check is part of the maintenance step).
TASK_PARTS = {"begin": (("capacity", "maintenance"), ("maintenance", "maintenance"), ("evacuate", "evacuate")),
              "label": (("duration_s", "label"),),
              "finish": (("verify", "verify"), ("finish", "finish"))}


def _seconds(result: dict[str, Any], part: str) -> float:
    return float((result.get("steps") or {}).get(part) or 0.0)


def step_began(tasks: dict[str, dict[str, Any]]) -> dict[str, str]:
    """When each step began (UTC, microseconds), from each task's result (its ``began`` and the seconds of its parts,
    one after the other): the timeline places the steps with them. Steps whose task did not say are left out."""
    found: dict[str, str] = {}
    for task, parts in TASK_PARTS.items():
        result = tasks.get(task) or {}
        moment = parse(result.get("began"))
        if moment is None:
            continue
        for part, step in parts:
            seconds = result.get("duration_s") if part == "duration_s" else (result.get("steps") or {}).get(part)
            if seconds is None:
                continue
            found.setdefault(step, micro_time_text(moment))
            moment += datetime.timedelta(seconds=float(seconds))
    return found


def _outcome(node: str, item: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A node's row from the results of its steps (each step's module result, by step and node), and what the
    window strategy noted (``slot``: when it took and gave back its slot; ``not_started``: why it never did)."""
    slot = results.get("slot", {}).get(node) or {}
    times = {"started": slot.get("started", ""), "finished": slot.get("finished", "")}
    failure = results.get("outcome", {}).get(node)
    if failure is not None:
        return {**dict(failure), **times}
    begin = results.get("begin", {}).get(node) or {}
    if begin.get("capacity_refused") or begin.get("driver_upgrade_refused") or begin.get("pool_refused"):
        return {"result": "skipped", "reason": begin.get("reason", ""), "steps": {}, "evicted": [],
                "stuck": (begin.get("room") or {}).get("stuck") or [], **times}
    if node not in results.get("finish", {}):
        reason = results.get("not_started", {}).get(node) or "the rollout stopped before this node"
        return {"result": "not started", "reason": reason, "steps": {}, "evicted": [], **times}
    finish = results["finish"][node]
    steps = {"maintenance": _seconds(begin, "maintenance") + _seconds(begin, "capacity"),
             "evacuate": _seconds(begin, "evacuate"),
             "label": float(results.get("label", {}).get(node, {}).get("duration_s") or 0.0),
             "verify": _seconds(finish, "verify"), "finish": _seconds(finish, "finish")}
    evicted = [e["name"] for e in (begin.get("evacuation") or {}).get("evicted") or []]
    requests = {task: int(result.get("api_requests") or 0)
                for task, result in (("begin", begin), ("label", results.get("label", {}).get(node) or {}),
                                     ("finish", finish))}
    began = step_began({"begin": begin, "label": results.get("label", {}).get(node) or {}, "finish": finish})
    recovered = (results.get("label", {}).get(node) or {}).get("recovered", "")
    return {"result": "resumed" if item["action"] == "resume" else "done", "reason": recovered, "steps": steps,
            "began": began, "evicted": evicted, "api_requests": requests, **times}


def entries(plan: list[dict[str, Any]], results: dict[str, dict[str, Any]],
            planned_only: bool = False) -> list[dict[str, Any]]:
    """One row per node; with ``planned_only`` (check mode) the rows say what would happen."""
    rows = []
    for item in plan:
        node = item["node"]
        base = {"node": node, "from": item["from_config"], "to": item["to_config"], "pool": item.get("pool", "")}
        if item["action"] == "skip":
            rows.append({**base, "result": "skipped", "reason": item["reason"], "steps": {}, "evicted": []})
        elif planned_only:
            blockers = (list(item.get("blockers") or [])
                        + [f"{entry} (nowhere to go: the capacity policy decides)" for entry in item.get("stuck") or []])
            reason = item["reason"] + (f"; will block: {'; '.join(blockers)}" if blockers else "")
            rows.append({**base, "result": f"would {item['action']}", "reason": reason, "steps": {},
                         "evicted": item.get("evict") or [], "blocked": blockers})
        else:
            rows.append({**base, **_outcome(node, item, results)})
    return rows


def table(rows: list[dict[str, Any]], lock_lost: str = "") -> list[str]:
    header = ["NODE", "FROM -> TO", "RESULT", *(step.upper() for step in STEPS), "TOTAL", "EVICTED"]
    lines = [header]
    for row in rows:
        steps = row.get("steps") or {}
        total = sum(steps.values()) if steps else 0.0
        lines.append([
            row["node"], f"{row['from'] or '-'} -> {row['to'] or '-'}", row["result"],
            *(f"{steps[s]:.1f}s" if s in steps else "-" for s in STEPS),
            f"{total:.1f}s" if steps else "-", str(len(row.get("evicted") or [])),
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in lines]
    for row in rows:
        reason = row.get("reason") or ""
        if reason and (row["result"] in ("failed", "not started") or row.get("blocked") or row.get("stuck")):
            text.append(reason if reason.startswith(f"{row['node']}:") else f"{row['node']}: {reason}")
    if lock_lost:
        text.append(f"LOCK LOST: {lock_lost}; this run stopped changing nodes (another run may hold the lock now)")
    return text


def summary(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Nodes per result; "no room" counts the skipped nodes left untouched because GPU pods on them had
    nowhere to go (the run did not bring them to their config)."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["result"]] = counts.get(row["result"], 0) + 1
        if row.get("stuck"):
            counts["no room"] = counts.get("no room", 0) + 1
    return counts
