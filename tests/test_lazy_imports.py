"""Kinds load lazily: validating a spec and the CLI's read-only commands never import TVM,
torch or XGBoost (seconds of start-up each); only building and measuring do.

Each check runs in a fresh interpreter, as the CLI does, and inspects `sys.modules`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("tvm", "torch", "xgboost")

# Appended to every script: which heavy packages (or their submodules) are loaded.
_REPORT = f"""
import json as _json, sys as _sys
_heavy = {HEAVY!r}
print(_json.dumps(sorted(
    m for m in _sys.modules if any(m == h or m.startswith(h + ".") for h in _heavy)
)))
"""


def _heavy_modules(script: str) -> list[str]:
    """Run `script` in a fresh interpreter at the repository root; the heavy modules it
    left imported (the last line it prints)."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script) + _REPORT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_validating_a_spec_imports_no_tvm_torch_or_xgboost() -> None:
    script = """
        import sys

        import tunelab.platform.api
        import tunelab.platform.cli
        import tunelab.platform.kinds
        import tunelab.platform.spec
        from tunelab.platform.kinds import available_kinds, get_kind

        assert "pipeline-search" in available_kinds()
        spec = tunelab.platform.spec.load_spec("examples/gemm-cpu-demo.yaml")
        # The kind really was loaded (validation runs its space), so the check is not vacuous.
        assert "tunelab.workers.pipeline_search.kind" in sys.modules
        kind = get_kind("pipeline-search")
        space = kind.space(spec)
        assert kind.model_features(spec, space[0])["predicted_s"] > 0
        kind.describe(spec.workload)
    """
    assert _heavy_modules(script) == []


def test_cli_help_jobs_and_show_import_no_tvm_torch_or_xgboost(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'trials.db'}"
    script = f"""
        from tunelab.platform.cli import app
        from tunelab.platform.jobs import create_job
        from tunelab.platform.spec import load_spec
        from tunelab.schema.db import get_engine

        create_job(get_engine({db!r}), load_spec("examples/gemm-cpu-demo.yaml"))
        for argv in (["--help"], ["jobs", "--db", {db!r}], ["show", "1", "--db", {db!r}]):
            try:
                app(argv, standalone_mode=False)
            except SystemExit as exc:
                assert not exc.code, (argv, exc.code)
    """
    assert _heavy_modules(script) == []


def test_cli_help_as_a_program_imports_no_tvm_torch_or_xgboost() -> None:
    # -X importtime lists every module imported, one a line: "import time: ... | name".
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tunelab.platform.cli", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()]
    assert "tunelab.platform.cli.jobs" in imported  # the listing is real, not empty
    heavy = [m for m in imported if m.split(".")[0] in HEAVY]
    assert heavy == []
    # Nor the database layer or the execution engine: --help is instant.
    assert {m.split(".")[0] for m in imported} & {"sqlalchemy", "numpy", "ray"} == set()
    assert "tunelab.platform.api" not in imported


def _imported_by(tmp_path: Path, *argv: str) -> list[str]:
    """The modules `python -m tunelab.platform.cli ARGV` imports (it must exit 0)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tunelab.platform.cli", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TUNELAB_DATA_DIR": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    return [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()]


def test_cli_start_up_loads_only_what_the_command_needs(tmp_path: Path) -> None:
    """Every command pays for the CLI's imports: `db url` loads no database layer, `jobs`
    no execution engine, search, Ray, NumPy or Alembic (seconds in all)."""
    from tunelab.schema.db import get_engine

    imported = _imported_by(tmp_path, "db", "url")
    assert "tunelab.platform.cli.db" in imported
    assert {m.split(".")[0] for m in imported} & {"sqlalchemy", "numpy", "ray"} == set()
    db = f"sqlite:///{tmp_path / 'trials.db'}"
    get_engine(db)  # an existing database, at the current schema
    imported = _imported_by(tmp_path, "jobs", "--db", db)
    assert "sqlalchemy" in imported and "tunelab.platform.api" in imported  # it did query
    too_much = {"numpy", "ray", "alembic", *HEAVY} & {m.split(".")[0] for m in imported}
    assert too_much == set()
    engine = [m for m in imported if m.startswith(("tunelab.platform.execution",
                                                   "tunelab.platform.search"))]  # fmt: skip
    assert engine == []
