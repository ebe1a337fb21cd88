"""A database made by the release before platform v2 migrates with nothing lost.

tests/data/v1_database.json.gz holds every row of a database that release wrote (a
replayed 40-trial pipeline-search job with real conv2d trials, and a job with a NumPy
baseline, model predictions, a lost worker's earlier attempts, a wrong result and a
timeout). It is loaded at revision 0001 and upgraded to head on SQLite and PostgreSQL.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import MetaData, insert, select

from tunelab.platform import api, jobs
from tunelab.platform.kinds import candidate_key
from tunelab.platform.spec import parse_spec
from tunelab.schema.db import alembic_config, current_revision, get_engine, head_revision, upgrade
from tunelab.schema.models import Job, Trial

V1 = Path(__file__).parent / "data" / "v1_database.json.gz"
PLATFORM_KEYS = {"baseline", "model", "model_version", "earlier_attempts"}


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: datetime.fromisoformat(v["__dt__"]) if isinstance(v, dict) and "__dt__" in v else v
        for k, v in row.items()
    }


def _load_v1(url: str) -> dict[str, list[dict[str, Any]]]:
    dump = json.loads(gzip.decompress(V1.read_bytes()))
    engine = get_engine(url, migrate=False)
    upgrade(engine, "0001")
    md = MetaData()
    md.reflect(engine)
    with engine.begin() as conn:
        for name in ("workloads", "environments", "jobs", "trials"):
            rows = [_decode(r) for r in dump[name]]
            if rows:
                conn.execute(insert(md.tables[name]), rows)
    return dump


def test_v1_database_migrates_with_nothing_lost(db_url: str) -> None:
    dump = _load_v1(db_url)
    engine = get_engine(db_url)  # migrates to head
    assert current_revision(engine) == head_revision()

    old_jobs = {j["id"]: j for j in dump["jobs"]}
    with engine.connect() as conn:
        new_jobs = {j.id: j for j in conn.execute(select(Job))}
        new_trials = {t.id: t for t in conn.execute(select(Trial))}
    assert set(new_jobs) == set(old_jobs)
    for jid, old in old_jobs.items():
        new = new_jobs[jid]
        for col in ("name", "kind", "spec", "status", "n_done", "n_ok", "n_failed",
                    "best_trial_id", "best_latency_s", "error"):  # fmt: skip
            assert getattr(new, col) == old[col], (jid, col)
        assert (new.objective, new.direction) == ("latency_s", "minimize")
        assert new.best_value == old["best_latency_s"]

    assert len(new_trials) == len(dump["trials"]) == 45
    for old in dump["trials"]:
        new = new_trials[old["id"]]
        assert new.candidate == hashlib.sha256(old["candidate"].encode()).hexdigest()
        assert new.candidate == candidate_key(old["params"])  # what a resumed driver asks
        for col in ("job_id", "params", "status", "latency_median_s", "latency_mean_s",
                    "latency_stdev_s", "latency_min_s", "n_repeats", "predicted_cost",
                    "build_s", "run_s", "attempts", "error", "worker_node",
                    "environment_id"):  # fmt: skip
            assert getattr(new, col) == old[col], (old["id"], col)
        extra = old["extra"]
        assert new.extra == {k: v for k, v in extra.items() if k not in PLATFORM_KEYS}
        assert new.baseline == extra.get("baseline")
        assert new.model == extra.get("model")
        assert new.model_version == extra.get("model_version")
        assert new.attempt_errors == extra.get("earlier_attempts")
        assert new.value == old["latency_median_s"]
        if old["latency_median_s"] is not None:
            assert new.objectives == {"latency_s": old["latency_median_s"]}

    # The carried-over facts are what the v1 rows said, and the platform reads them.
    assert sum(t.baseline == "numpy" for t in new_trials.values()) == 1
    assert sum(t.model is not None for t in new_trials.values()) >= 40
    interrupted = next(j for j in new_jobs.values() if j.status == "interrupted")
    done = {k: v for k, v, _ in jobs.recorded(engine, interrupted.id)}
    assert len(done) == 5 and all(len(k) == 64 for k in done)
    best = jobs.trials(engine, interrupted.id, top=5)
    assert [t.params for t in best] == [{"stages": 2, "tile_m": 32}]  # never the baseline

    # Their specs still validate (a resumed driver parses them) and they still export.
    for job in new_jobs.values():
        spec = parse_spec(job.spec, f"job {job.id}")
        assert spec.target.kind == "llvm" and spec.measure.repeats == old_jobs[job.id]["spec"][
            "measure"]["repeats"]  # fmt: skip
    rows = list(api.iter_trial_rows(interrupted.id, db=db_url))
    assert len(rows) == 5 and {r["baseline"] for r in rows} == {None, "numpy"}
    assert sum(r["objective_latency_s"] is not None for r in rows) == 2


def test_downgrade_restores_v1_rows(sqlite_url: str) -> None:
    dump = _load_v1(sqlite_url)
    engine = get_engine(sqlite_url)
    command.downgrade(alembic_config(engine), "0001")
    md = MetaData()
    md.reflect(engine)
    with engine.connect() as conn:
        rows = {r.id: r._mapping for r in conn.execute(select(md.tables["trials"]))}
    for old in dump["trials"]:
        new = rows[old["id"]]
        assert new["candidate"] == old["candidate"]
        assert new["extra"] == old["extra"]
