"""The Jinja test the rollout asks before it takes its lock: does this ansible-core load a strategy plugin?"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_it_tells_a_strategy_that_loads_from_one_that_does_not(tmp_path: Path) -> None:
    names = ["nvidia_mig.rollout.mig_window", "ansible.builtin.free", "nvidia_mig.rollout.no_such_strategy"]
    playbook = tmp_path / "ask.yml"
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [{"ansible.builtin.copy": {
            "content": "{{ {" + ", ".join(f"'{n}': '{n}' is nvidia_mig.rollout.loadable_strategy" for n in names) + "} | to_json }}",
            "dest": str(tmp_path / "answers.json")}}]}]))
    result = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                             str(playbook)], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert json.loads((tmp_path / "answers.json").read_text()) == {
        "nvidia_mig.rollout.mig_window": True, "ansible.builtin.free": True,
        "nvidia_mig.rollout.no_such_strategy": False}
