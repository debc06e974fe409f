"""Every bench script imports against today's library: a refactor that breaks one fails here, not at bench time."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
# packages only bench/requirements.txt installs (the peers); a script that needs one is skipped without it
BENCH_ONLY = {"trl", "rouge_score"}
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py"))

# In one child process: the peers' imports change process state (absl, under rouge_score, takes over logging and
# stderr), which must not leak into the rest of the suite.
IMPORT_ALL = """
import importlib, json, sys, traceback
out = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
        out[name] = ["ok", ""]
    except ModuleNotFoundError as e:
        out[name] = ["missing", (e.name or "").split(".")[0], traceback.format_exc()]
    except Exception:
        out[name] = ["error", traceback.format_exc()]
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def imported() -> dict:
    proc = subprocess.run([sys.executable, "-c", IMPORT_ALL, *SCRIPTS], cwd=BENCH, capture_output=True, text=True,
                          timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"the import child failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.parametrize("name", SCRIPTS)
def test_bench_script_imports(name, imported):
    status, *detail = imported[name]
    if status == "missing" and detail[0] in BENCH_ONLY:
        pytest.skip(f"needs the bench-only package {detail[0]}")
    assert status == "ok", detail[-1]


def test_personal_benches_judge_adapters_by_the_demos_bounds(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    from _personal_eval import fluency_vs, fmt, within_bounds

    # per-prompt means: policy -1.1, -2.1 against base -1.0, -2.0: diff -0.1, relative -0.1 / 1.5
    fv = fluency_vs([-1.0, -1.2, -2.0, -2.2], [-1.0, -1.0, -2.0, -2.0], per_prompt=2)
    assert fv["diff"]["mean"] == pytest.approx(-0.1)
    assert fv["relative"]["mean"] == pytest.approx(-0.1 / 1.5)
    assert fv["relative"]["low"] == pytest.approx(-0.1)  # a resample of the -1.0 prompt twice
    assert fmt(fv["relative"], pct=True) == "-7% [-10, -5]"
    assert within_bounds({"mean": 7.0}, fv, 4.0) == "KL > 1.5x4; fluency CI below -5%"
    assert within_bounds({"mean": 5.9}, {"relative": {"low": -0.04}}, 4.0) == "within"
    assert within_bounds({"mean": 1.0}, None, 4.0) == "fluency test not run"
