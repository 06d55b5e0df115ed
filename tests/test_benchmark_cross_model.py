"""benchmarks/cross_model.py runs as a user runs it (``--quick``, one workload) and prints its
table, with merged training equal to training each trial alone."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "cross_model.py")


def table_rows(stdout: str) -> list[dict[str, str]]:
    """The markdown table's rows as {column: cell}."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]


def test_quick_run_prints_the_table_and_merged_training_equals_training_alone():
    # one thread: steady when other processes share the cores (K=2 of the learning-rate sweep)
    result = subprocess.run([sys.executable, SCRIPT, "--quick", "--workloads", "c", "--ks", "2", "--threads", "1",
                             "--no-autotune"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "(c) one small CNN" in result.stdout
    rows = table_rows(result.stdout)
    assert [row["K"] for row in rows] == ["2"]
    row = rows[0]
    for column in ("merged steps/s", "indep steps/s", "vmap steps/s", "peak MB merged", "peak MB indep"):
        assert float(row[column]) > 0, (column, row)
    first, worst = (float(v) for v in row["rel loss diff 1st/max"].split("/"))
    assert first <= 1e-5 and worst <= 1e-3, row
    assert float(row["metric diff"]) <= 0.01, row
    assert row["shared/batched nodes"].startswith("0/") and not row["shared/batched nodes"].startswith("0/0 "), row
    assert "summary:" in result.stdout and "DIFFER" not in result.stdout
