"""Every bench script imports against today's library: a refactor that breaks one fails here, not at bench time."""

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
# packages only bench/requirements.txt installs (the peers); a script that needs one is skipped without it
BENCH_ONLY = {"trl", "rouge_score"}


@pytest.mark.parametrize("name", sorted(p.stem for p in BENCH.glob("*.py")))
def test_bench_script_imports(name, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name.split(".")[0] not in BENCH_ONLY:
            raise
        pytest.skip(f"needs the bench-only package {e.name}")
    finally:
        for mod in [m for m, v in sys.modules.items() if getattr(v, "__file__", None) and Path(v.__file__).parent == BENCH]:
            sys.modules.pop(mod)
