"""The rollout report: one entry per node, as JSON and as a table an operator can read."""

from __future__ import annotations

from typing import Any

STEPS = ("maintenance", "evacuate", "label", "verify", "finish")


def _outcome(node: str, item: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A node's row from the results of its steps (each step's module result, by step and node)."""
    failure = results.get("outcome", {}).get(node)
    if failure is not None:
        return dict(failure)
    if node not in results.get("finish", {}):
        return {"result": "not started", "reason": "the rollout stopped before this node", "steps": {},
                "evicted": []}
    names = {"begin": "maintenance", "evacuate": "evacuate", "label": "label", "verify": "verify", "finish": "finish"}
    steps = {label: float(results.get(step, {}).get(node, {}).get("duration_s") or 0.0)
             for step, label in names.items()}
    evicted = [e["name"] for e in results.get("evacuate", {}).get(node, {}).get("evicted") or []]
    return {"result": "resumed" if item["action"] == "resume" else "done", "reason": "", "steps": steps,
            "evicted": evicted}


def entries(plan: list[dict[str, Any]], results: dict[str, dict[str, Any]],
            planned_only: bool = False) -> list[dict[str, Any]]:
    """One row per node; with ``planned_only`` (check mode) the rows say what would happen."""
    rows = []
    for item in plan:
        node = item["node"]
        base = {"node": node, "from": item["from_config"], "to": item["to_config"]}
        if item["action"] == "skip":
            rows.append({**base, "result": "skipped", "reason": item["reason"], "steps": {}, "evicted": []})
        elif planned_only:
            blockers = item.get("blockers") or []
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
        if reason and (row["result"] in ("failed", "not started") or row.get("blocked")):
            text.append(reason if reason.startswith(f"{row['node']}:") else f"{row['node']}: {reason}")
    if lock_lost:
        text.append(f"LOCK LOST: {lock_lost}; this run stopped changing nodes (another run may hold the lock now)")
    return text


def summary(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["result"]] = counts.get(row["result"], 0) + 1
    return counts
