"""Benchmark: the timeline page's size and render time at 200 and 1,000 nodes.

The report is synthetic but scheduled for real: each node's steps take times like a fleet's (a MIG apply of about
5 s, a tenth of the nodes a MIG mode change of a few minutes; evacuation, verification, Ansible between the steps),
and the plan's own schedule (rollout.schedule.Schedule.simulate: a window of 10%, four pools with a budget of 25%
each) decides when each node starts. 2% of the nodes fail, 1% are refused (no room), evictions 0 to 4 per node.

Render time: headless Chromium (Debian's ``chromium``) loads the file, and the page's own script notes
``performance.now()`` once it has measured every lane (which forces the layout); the browser's whole run (start,
load, exit) is timed too, and an empty page's for comparison.

    .venv/bin/python bench/timeline.py [--nodes 200,1000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from migrollout.rollout import timeline
from migrollout.rollout.schedule import Schedule
from migrollout.timestamps import micro_time_text

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1000")
BETWEEN_S = 0.3         # Ansible between two tasks of a node


def synthetic_report(count: int, seed: int = 7) -> dict:
    chance = random.Random(seed)
    names = [f"gpu-{i:04d}" for i in range(count)]
    pools = {name: f"pool-{i % 4}" for i, name in enumerate(names)}
    steps = {}
    for name in names:
        apply_s = chance.uniform(180, 420) if chance.random() < 0.1 else chance.uniform(4, 8)
        steps[name] = {"maintenance": chance.uniform(0.02, 0.08), "evacuate": chance.uniform(0.1, 3.0),
                       "label": apply_s, "verify": chance.uniform(1, 4), "finish": chance.uniform(0.02, 0.08)}
    window = max(count // 10, 1)
    plan = Schedule(tuple(names), pools, window=window, max_failures=count * 5 // 100, pool_budgets={f"pool-{i}": max(count // 16, 1)
                                                                    for i in range(4)})
    durations = {name: sum(parts.values()) + 2 * BETWEEN_S for name, parts in steps.items()}
    simulation = plan.simulate(durations)
    origin = datetime.datetime(2026, 12, 7, 10, 0, tzinfo=datetime.UTC)

    def at(seconds: float) -> str:
        return micro_time_text(origin + datetime.timedelta(seconds=seconds))

    rows = []
    for name in names:
        start, end = simulation.starts[name], simulation.ends[name]
        row = {"node": name, "pool": pools[name], "from": "all-disabled", "to": "all-1g.10gb", "result": "done",
               "reason": "", "started": at(start), "finished": at(end), "steps": steps[name],
               "evicted": [f"team-{chance.randint(1, 9)}/job-{name}-{k}" for k in range(chance.randint(0, 4))]}
        cursor, began = start, {}
        for step, seconds in steps[name].items():
            began[step] = at(cursor)
            cursor += seconds + (BETWEEN_S if step in ("evacuate", "label") else 0.0)
        row["began"] = began
        luck = chance.random()
        if luck < 0.02:
            row.update(result="failed", steps={}, began={}, evicted=[],
                       reason=f"{name}: step 'Set the MIG config and wait for the MIG manager' failed: the MIG "
                              f"manager reported failed; the node stays in maintenance")
        elif luck < 0.03:
            row.update(result="skipped", steps={}, began={}, evicted=[], stuck=["team-1/job"],
                       reason=f"node {name} was not touched: 1 GPU pod(s) would have nowhere to go")
        rows.append(row)
    summary: dict[str, int] = {}
    for row in rows:
        summary[row["result"]] = summary.get(row["result"], 0) + 1
    return {"run": f"bench-{count}", "wall_s": simulation.wall_s + 40, "summary": summary, "nodes": rows,
            "lock_lost": "", "schedule": plan.as_dict()}


def chromium_run(chromium: str, page: Path, profile: Path) -> tuple[float, str]:
    started = time.monotonic()
    result = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                            capture_output=True, text=True, timeout=300, check=True)
    return time.monotonic() - started, result.stdout


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", default="200,1000")
    parser.add_argument("--keep", help="keep the pages and screenshots in this directory")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if not chromium:
        print("bench/timeline.py needs Chromium: scripts/install-chromium.sh", file=sys.stderr)
        return 1
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(args.keep or temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        empty = workdir / "empty.html"
        empty.write_text("<!DOCTYPE html><html><body>empty</body></html>")
        chromium_run(chromium, empty, workdir / "profile")            # the first start fills the profile
        figures["empty_page_browser_s"] = round(chromium_run(chromium, empty, workdir / "profile")[0], 2)
        for count in (int(n) for n in args.nodes.split(",")):
            report = synthetic_report(count)
            page = workdir / f"timeline-{count}.html"
            started = time.monotonic()
            size = timeline.write(page, timeline.from_report(report))
            generate_s = time.monotonic() - started
            browser_s, dom = chromium_run(chromium, page, workdir / "profile")
            render_ms = re.search(r'data-render-ms="(\d+)"', dom)
            lanes = dom.count('<g class="lane"')
            figures[str(count)] = {"page_bytes": size, "page_kib": round(size / 1024), "generate_s": round(generate_s, 2),
                                   "render_ms": int(render_ms.group(1)) if render_ms else None,
                                   "browser_run_s": round(browser_s, 2), "lanes": lanes,
                                   "node_phase_s": round(timeline.from_report(report).end, 1)}
            if args.keep:
                subprocess.run([chromium, *FLAGS, f"--user-data-dir={workdir / 'profile'}",
                                f"--screenshot={workdir / f'timeline-{count}.png'}", page.as_uri()],
                               capture_output=True, timeout=300, check=True)
            print(f"{count} nodes: {figures[str(count)]}", flush=True)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
