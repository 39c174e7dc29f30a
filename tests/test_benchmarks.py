"""The benchmark command runs end to end; its numbers are checked by people, not here."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnviz_widgets.core.attribution import METHODS

REPOSITORY = Path(__file__).resolve().parents[1]
ROW_IDS = ("P1a", "P1b", "P2a", "P2b", "P3a", "P3b", "P3c", "P3d", "P3e", "P3f", "P4a", "P4b", "P4c", "P4d", "P4e", "P4f", "P4g", "P5")
ROW_IDS += ("P6a", "P6b", "P6c", "P6d", "P6e", "P6f", "P6g", "P7a", "P7b", "P7c", "P7d", "P7e", "P7f", "P8a", "P8b", "P8c")
ROW_IDS += ("P9a", *(f"P9b {method}" for method in METHODS))  # a pointing-game row per attribution method
ROW_IDS += ("P10a", "P10b")


@pytest.mark.slow
def test_quick_benchmark_writes_a_table_with_every_row(tmp_path):
    output = tmp_path / "results.md"
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPOSITORY)}
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--output", str(output)],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0 and output.exists(), run.stderr[-3000:]
    table_rows = [line for line in output.read_text().splitlines() if line.startswith("| P")]
    assert [line.split("|")[1].strip() for line in table_rows] == list(ROW_IDS), run.stderr[-3000:]
