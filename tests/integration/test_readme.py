"""The README's code runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_first_readme_example_runs_on_the_process_pool(tmp_path: Path) -> None:
    script = tmp_path / "readme_example.py"
    script.write_text(_python_blocks()[0])
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "2310"
    assert "'total': 2310" in lines[1]
    assert "'worker_deaths': 0" in lines[3]


def test_readme_commands_are_the_ones_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -e . && python examples/word_count.py" in readme
    assert "python -m pytest -n auto" in readme
    assert "python -m pytest -n auto" in ci
