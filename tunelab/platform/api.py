"""The Python API; the `tunelab` command line is a thin layer over it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select

from tunelab.config import logs_dir, resolve_db_url
from tunelab.platform import intervals, jobs
from tunelab.platform.records import JobRecord, TrialRecord
from tunelab.platform.rows import column_union
from tunelab.schema.db import get_engine, normalise_url, redact
from tunelab.schema.models import JobStatus, Trial

if TYPE_CHECKING:  # what runs jobs (Ray, NumPy) and validates specs is imported on use
    from sqlalchemy import Engine

    from tunelab.platform.execution import Progress
    from tunelab.platform.spec import JobSpec

TRIAL_COLUMNS = (
    "id", "candidate", "status", "value", "baseline", "latency_median_s", "latency_mean_s",
    "latency_stdev_s", "latency_min_s", "n_repeats", "predicted_cost", "model",
    "model_version", "build_s", "run_s", "attempts", "worker_node", "environment_id", "error",
    "started_at", "finished_at",
)  # fmt: skip
INTERVAL_COLUMNS = ("value_ci_lo", "value_ci_hi", "value_verdict", "value_interval")


def _engine(db: str | None) -> Engine:
    """`get_engine(db)`: the database reachable and migrated to the head revision; one
    already there is recognised without loading Alembic (most of a query's start-up)."""
    from tunelab.schema.revision import at_head

    engine = get_engine(db, migrate=False)
    return engine if at_head(engine) else get_engine(db)


def as_spec(spec: JobSpec | dict[str, Any] | str | Path) -> JobSpec:
    """A validated spec from a JobSpec, a dict, or a path to a YAML/JSON file."""
    from tunelab.platform.spec import JobSpec, load_spec, parse_spec

    if isinstance(spec, JobSpec):
        return spec
    if isinstance(spec, dict):
        return parse_spec(spec)
    return load_spec(spec)


def as_specs(spec: JobSpec | dict[str, Any] | str | Path) -> list[JobSpec]:
    """Like `as_spec`, but a spec naming a `suite` gives one spec per workload."""
    from tunelab.platform.spec import JobSpec, expand_suite, load_specs, parse_spec

    if isinstance(spec, JobSpec):
        return [spec]
    if isinstance(spec, dict):
        return [parse_spec(d) for d in expand_suite(spec)]
    return load_specs(spec)


def create(spec: JobSpec | dict[str, Any] | str | Path, *, db: str | None = None) -> int:
    """Validate and record a job without running it (`resume` runs it); returns its id."""
    return jobs.create_job(_engine(db), as_spec(spec))


def submit(
    spec: JobSpec | dict[str, Any] | str | Path,
    *,
    wait: bool = True,
    db: str | None = None,
    ray_address: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> int:
    """Validate and record a job, then run it here (`wait`) or in a background driver.

    Returns the job id. Raises SpecError for an invalid spec before anything is written,
    and DatabaseError when the database cannot be reached.
    """
    from tunelab.platform.execution import run_job

    job_spec = as_spec(spec)
    engine = _engine(db)
    job_id = jobs.create_job(engine, job_spec)
    if wait:
        run_job(engine, job_id, ray_address=ray_address, on_progress=on_progress)
    else:
        start_driver(job_id, db=db, ray_address=ray_address)
    return job_id


def resume(
    job_id: int,
    *,
    wait: bool = True,
    db: str | None = None,
    ray_address: str | None = None,
    force: bool = False,
    retry_failed: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> JobStatus:
    """Continue a job whose driver died, failed, was interrupted or cancelled: recorded
    trials are kept, the rest run; `retry_failed` also runs lost and timed-out ones again."""
    engine = _engine(db)
    if not wait:
        job = jobs.get_job(engine, job_id)  # refuse here, not in the background driver's log
        jobs.check_resumable(job, force=force, retry_failed=retry_failed)
        start_driver(job_id, db=db, ray_address=ray_address, force=force, retry_failed=retry_failed)
        return JobStatus(job.status)
    from tunelab.platform.execution import run_job

    return run_job(
        engine, job_id, ray_address=ray_address, on_progress=on_progress, force=force,
        retry_failed=retry_failed,
    )  # fmt: skip


def start_driver(
    job_id: int,
    *,
    db: str | None = None,
    ray_address: str | None = None,
    force: bool = False,
    retry_failed: bool = False,
) -> subprocess.Popen[bytes]:
    """Run a job's driver as a detached background process; its log goes to the data dir."""
    url = normalise_url(resolve_db_url(db))
    cmd = [sys.executable, "-m", "tunelab.platform.cli", "run-driver", str(job_id), "--db", url]
    if ray_address:
        cmd += ["--ray", ray_address]
    if force:
        cmd.append("--force")
    if retry_failed:
        cmd.append("--retry-failed")
    log_path = driver_log_path(job_id, db=db)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip


def database_key(db: str | None = None) -> str:
    """A short name for a database, unique to it, safe as a directory name: its backend
    and name, then a hash of its URL (password hidden; a SQLite file by its full path).
    Job ids are per database, so what is kept per job (driver logs) is kept under this."""
    import hashlib
    import re

    from sqlalchemy.engine import make_url

    url = make_url(normalise_url(resolve_db_url(db)))
    name = url.database or ""
    if url.get_backend_name() == "sqlite" and name and name != ":memory:":
        path = Path(name).expanduser().resolve()
        url, name = url.set(database=str(path)), path.stem
    digest = hashlib.sha256(redact(url.render_as_string()).encode()).hexdigest()[:10]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{url.get_backend_name()}-{name}").strip("-")[:40]
    return f"{slug}-{digest}"


def driver_log_path(job_id: int, *, db: str | None = None) -> Path:
    """Where a background driver of job `job_id` of database `db` writes its log:
    `DATA_DIR/logs/DATABASE/job-ID.log` (DATABASE: `database_key`)."""
    return logs_dir(create=False) / database_key(db) / f"job-{job_id}.log"


def cancel(job_id: int, *, db: str | None = None) -> None:
    jobs.cancel(_engine(db), job_id)


def get_job(job_id: int, *, db: str | None = None) -> JobRecord:
    """Job `job_id` as recorded (JobNotFound if there is none)."""
    return JobRecord.of(jobs.get_job(_engine(db), job_id))


def list_jobs(*, db: str | None = None, **filters: Any) -> list[JobRecord]:
    """Jobs, newest first; filters: kind, status, limit."""
    return [JobRecord.of(j) for j in jobs.list_jobs(_engine(db), **filters)]


def status_counts(job_id: int, *, db: str | None = None) -> dict[str, int]:
    """How many of a job's trials ended in each status (running ones included)."""
    return jobs.status_counts(_engine(db), job_id)


def busy_report(
    job_id: int, *, db: str | None = None, trial_ids: Sequence[int] = ()
) -> dict[str, Any]:
    """What of a job was measured on a busy node: the worst load seen, and which of
    `trial_ids` were (`jobs.busy_report`)."""
    return jobs.busy_report(_engine(db), job_id, trial_ids)


def trials(
    job_id: int, *, db: str | None = None, top: int | None = None, status: str | None = None
) -> list[TrialRecord]:
    """A job's trials in recording order; `top=N`: the N best correct searched ones by
    the job's primary objective."""
    engine = _engine(db)
    jobs.get_job(engine, job_id)
    return [TrialRecord.of(t) for t in jobs.trials(engine, job_id, top=top, status=status)]


def baseline_trials(job_id: int, *, db: str | None = None) -> list[TrialRecord]:
    """A job's baseline trials (references measured beside the search)."""
    return [TrialRecord.of(t) for t in jobs.baseline_trials(_engine(db), job_id)]


def _trial_key(engine: Any, job_id: int, trial_id: int | None) -> str:
    """The candidate key of trial `trial_id` of job `job_id` ('' for the job itself)."""
    if trial_id is None:
        return ""
    with engine.connect() as conn:
        key = conn.execute(
            select(Trial.candidate).where(Trial.id == trial_id, Trial.job_id == job_id)
        ).scalar()
    if key is None:
        raise jobs.JobNotFound(f"job {job_id} has no trial {trial_id}")
    return key


def _series_key(engine: Any, job_id: int, trial: int | None, series: str | None) -> str:
    if series is not None and trial is not None:
        raise ValueError("give a trial or a series, not both")
    if series is not None:
        from tunelab.platform import steps as steps_mod

        known = [k for k in steps_mod.trial_keys_with_steps(engine, job_id) if ":" in k]
        if series not in known:
            raise jobs.JobNotFound(
                f"job {job_id} has no series {series!r} (its series: {', '.join(known) or 'none'})"
            )
        return series
    return _trial_key(engine, job_id, trial)


def steps(
    job_id: int,
    *,
    trial: int | None = None,
    start: int | None = None,
    stop: int | None = None,
    limit: int | None = None,
    series: str | None = None,
    db: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Intermediate results of a job (or of its trial `trial`, by trial id, or of a
    named `series` of the job, e.g. `eval:bert`), in step order: dicts of step, metrics
    and recorded_at, streamed from the database."""
    from tunelab.platform import steps as steps_mod

    engine = _engine(db)
    jobs.get_job(engine, job_id)
    key = _series_key(engine, job_id, trial, series)
    yield from steps_mod.read_steps(engine, job_id, key, start=start, stop=stop, limit=limit)


def curve(
    job_id: int, metric: str, *, trial: int | None = None, buckets: int = 1000,
    series: str | None = None, db: str | None = None,
) -> list[Any]:  # fmt: skip
    """A learning curve down-sampled in the database: per bucket of steps, the first and
    last step, min, max and mean of `metric` (`tunelab.platform.steps.CurvePoint`)."""
    from tunelab.platform import steps as steps_mod

    engine = _engine(db)
    jobs.get_job(engine, job_id)
    key = _series_key(engine, job_id, trial, series)
    return steps_mod.curve(engine, job_id, metric, key, buckets=buckets)


def artifacts(job_id: int | None = None, *, db: str | None = None) -> list[Any]:
    """Artifacts (checkpoints, graphs, sources) of a job, or of every job: frozen
    `tunelab.platform.artifacts.ArtifactInfo` records."""
    from tunelab.platform import artifacts as artifacts_mod

    engine = _engine(db)
    if job_id is not None:
        jobs.get_job(engine, job_id)
    return artifacts_mod.list_artifacts(engine, job_id)


def get_artifact(
    ref: str, path: str | Path, *, overwrite: bool = False, db: str | None = None
) -> Any:
    """Write artifact `ref` (an id, JOB:NAME or a hash prefix) to `path`, verified; an
    existing file is kept unless `overwrite`. Returns the artifact's record."""
    from tunelab.platform import artifacts as artifacts_mod

    return artifacts_mod.write_artifact(_engine(db), ref, Path(path), overwrite=overwrite)


def prune_artifacts(
    job_id: int | None = None, *, keep_last: int = 3, dry_run: bool = False,
    db: str | None = None,
) -> list[Any]:  # fmt: skip
    """Delete checkpoints beyond the newest `keep_last` of each job and evaluation
    (pinned ones stay) and the blobs nothing names any more; returns what went."""
    from tunelab.platform import artifacts as artifacts_mod

    engine = _engine(db)
    if job_id is not None:
        jobs.get_job(engine, job_id)
    return artifacts_mod.prune(engine, job_id, keep_last=keep_last, dry_run=dry_run)


def pin_artifact(ref: str, pinned: bool = True, *, db: str | None = None) -> Any:
    """Keep artifact `ref` through every prune (or let it go again)."""
    from tunelab.platform import artifacts as artifacts_mod

    return artifacts_mod.pin(_engine(db), ref, pinned)


def trial_row(
    t: Trial | TrialRecord,
    param_names: Sequence[str] = (),
    objective_names: Sequence[str] = (),
    *,
    nested: bool = False,
    primary: str | None = None,
) -> dict[str, Any]:
    """A trial as a flat dict: its columns, `busy_node` (measured on a busy node: its
    numbers are suspect and kept from every cache), the interval of its value (`value_ci_lo`,
    `value_ci_hi`, `value_verdict`, `value_interval`: None where the trial recorded none
    for the `primary` objective), `param_*` per parameter and `objective_*` per named
    objective (every one of the names given, None where this trial has none), its earlier
    attempts' errors and `extra`: as JSON text for flat formats (CSV, Parquet), as lists
    and dicts with `nested` (JSON, JSON lines)."""
    row = {c: getattr(t, c) for c in TRIAL_COLUMNS}
    row["busy_node"] = bool(t.node_health and t.node_health.get("busy"))
    iv = intervals.of_trial(t.extra, primary) if primary else None
    row |= {
        "value_ci_lo": iv.lo if iv else None, "value_ci_hi": iv.hi if iv else None,
        "value_verdict": iv.outcome if iv else None, "value_interval": iv.label if iv else None,
    }  # fmt: skip
    for prefix, names, values in (
        ("param", param_names, t.params), ("objective", objective_names, t.objectives or {})
    ):  # fmt: skip
        for name in names:
            row[f"{prefix}_{name}"] = None
        for name, value in values.items():
            row[f"{prefix}_{name}"] = value
    if nested:
        row["attempt_errors"] = list(t.attempt_errors) if t.attempt_errors else None
        row["extra"] = t.extra
    else:
        row["attempt_errors"] = json.dumps(t.attempt_errors) if t.attempt_errors else None
        row["extra"] = json.dumps(t.extra, sort_keys=True)
    for c in ("started_at", "finished_at"):
        row[c] = row[c].isoformat() if row[c] is not None else None
    return row


def iter_trial_rows(
    job_id: int, *, db: str | None = None, chunk: int = 2000, nested: bool = False
) -> Iterator[dict]:
    """Every trial of a job as flat rows (`trial_row`), streamed from the database in
    chunks. Raises JobNotFound at once, before the first row is asked for."""
    engine = _engine(db)
    objective = jobs.get_job(engine, job_id).objective
    return _trial_rows(engine, job_id, chunk, nested, objective)


def _trial_rows(
    engine: Any, job_id: int, chunk: int, nested: bool, objective: str | None = None
) -> Iterator[dict]:
    from sqlalchemy.orm import Session

    # Trials of one job may have different parameters (a library baseline has its own):
    # every row gets every parameter column, so CSV headers and Parquet schemas hold.
    with engine.connect() as conn:
        names = []
        for column in (Trial.params, Trial.objectives):
            stmt = select(column).where(Trial.job_id == job_id).order_by(Trial.id)
            values = conn.execute(stmt.execution_options(yield_per=chunk)).scalars()
            names.append(column_union(v or {} for v in values))
    with Session(engine) as s:
        stmt = select(Trial).where(Trial.job_id == job_id).order_by(Trial.id)
        for t in s.scalars(stmt.execution_options(yield_per=chunk)):
            yield trial_row(t, *names, nested=nested, primary=objective)


def check_output_path(path: str | Path) -> Path:
    """`path` as a file to write: not a directory, in a directory that exists (raises
    IsADirectoryError, FileNotFoundError or NotADirectoryError with a message saying so),
    and if it exists, a regular file (NotRegularFile for a device, a FIFO...)."""
    from tunelab.platform.outpaths import check_replaceable

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory: give a file name")
    check_replaceable(path)  # a device, FIFO...: NotRegularFile
    parent = path.parent
    if not parent.exists():
        raise FileNotFoundError(f"{path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise NotADirectoryError(f"{path}: {parent} is not a directory")
    return path


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` that replaces it when the block ends without error;
    on any error or interruption it is removed and `path` is left as it was."""
    import os
    import secrets
    import shutil

    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        from tunelab.platform.outpaths import check_replaceable

        check_replaceable(path)  # only a regular file is replaced
        if path.exists():
            shutil.copymode(path, tmp)  # a replaced file keeps its permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def export(
    job_id: int,
    path: str | Path,
    fmt: Literal["csv", "jsonl", "parquet"],
    *,
    db: str | None = None,
) -> int:
    """Write every trial of a job to `path`; returns the number of rows written.

    The job is looked up first (JobNotFound) and the rows go to a temporary file beside
    `path` that replaces it only once complete: a failed or interrupted export leaves an
    existing file as it was and no partial file."""
    path = check_output_path(path)
    rows = iter_trial_rows(job_id, db=db, nested=fmt == "jsonl")
    with _replacing(path) as tmp:
        n = _write_parquet(rows, tmp) if fmt == "parquet" else _write_text(rows, tmp, fmt)
    return n


def _write_text(rows: Iterator[dict[str, Any]], path: Path, fmt: str) -> int:
    n = 0
    with path.open("x", newline="") as f:
        writer: csv.DictWriter[str] | None = None
        for row in rows:
            n += 1
            if fmt == "jsonl":
                f.write(json.dumps(row) + "\n")
                continue
            if writer is None:
                writer = csv.DictWriter(f, fieldnames=list(row), extrasaction="ignore")
                writer.writeheader()
            writer.writerow(row)
    return n


def _write_parquet(rows: Iterator[dict[str, Any]], path: Path, batch: int = 5000) -> int:
    """Stream rows into a Parquet file with a fixed schema (columns may be all-null)."""
    import itertools

    import pyarrow as pa
    import pyarrow.parquet as pq

    floats = {c for c in TRIAL_COLUMNS if c.endswith("_s") or c in ("predicted_cost", "value")}
    floats |= set(INTERVAL_COLUMNS[:2])
    ints = {"id", "n_repeats", "attempts", "environment_id", "model_version"}

    def arrow_type(name: str, value: Any) -> pa.DataType:
        if name in floats or name.startswith("objective_"):
            return pa.float64()
        if name in ints:
            return pa.int64()
        if isinstance(value, bool):
            return pa.bool_()
        if isinstance(value, int) and name.startswith("param_"):
            return pa.int64()
        if isinstance(value, float):
            return pa.float64()
        return pa.string()

    it = iter(rows)
    head = list(itertools.islice(it, batch))
    if not head:
        columns = (*TRIAL_COLUMNS, "busy_node", *INTERVAL_COLUMNS, "attempt_errors", "extra")
        schema = pa.schema([(c, arrow_type(c, None)) for c in columns])
        pq.write_table(schema.empty_table(), path)
        return 0
    # Each column's type from its first non-null value in the first batch.
    sample = {k: next((r[k] for r in head if r.get(k) is not None), None) for k in head[0]}
    schema = pa.schema([(k, arrow_type(k, v)) for k, v in sample.items()])
    n = 0
    rows_left = itertools.chain(head, it)
    with pq.ParquetWriter(path, schema) as writer:
        while chunk := list(itertools.islice(rows_left, batch)):  # itertools.batched is 3.12+
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
            n += len(chunk)
    return n


TERMINAL_RAY_JOB_STATES = {"SUCCEEDED", "FAILED", "STOPPED"}


class JobsApiUnreachable(ConnectionError):
    """A Ray Jobs API did not answer: connection refused, timed out, or no such host."""


class JobsApiAddressError(ValueError):
    """An address that Ray's Jobs API client cannot parse (a bad host or port)."""


@contextmanager
def _jobs_api_errors(address: str) -> Iterator[None]:
    """Turn the connection failures of Ray's client (a builtin ConnectionError from its
    version check, requests' own ConnectionError later) into JobsApiUnreachable."""
    import requests

    try:
        yield
    except (ConnectionError, requests.exceptions.ConnectionError) as exc:
        raise JobsApiUnreachable(f"cannot reach the Ray Jobs API at {address}: {exc}") from exc


def submit_to_cluster(
    spec: JobSpec | dict[str, Any] | str | Path,
    jobs_api: str,
    *,
    wait: bool = True,
    echo: Callable[[str], None] | None = None,
    poll_s: float = 1.0,
) -> tuple[str, str]:
    """Submit a job through a cluster's Ray Jobs API (the Ray dashboard's address).

    The spec is validated here; the job is recorded and driven inside the cluster, on
    the database the cluster is configured with. Returns (submission id, Ray job state);
    with `wait`, follows the job's log through `echo` until it ends. Raises SpecError for
    an invalid spec, JobsApiAddressError for an unusable address and JobsApiUnreachable
    when the Jobs API does not answer.
    """
    job_spec = as_spec(spec)
    with _jobs_api_errors(jobs_api):
        return _submit_to_cluster(job_spec, jobs_api, wait, echo, poll_s)


def _submit_to_cluster(
    job_spec: JobSpec,
    jobs_api: str,
    wait: bool,
    echo: Callable[[str], None] | None,
    poll_s: float,
) -> tuple[str, str]:
    import re
    import time
    import uuid

    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(jobs_api)
    except ValueError as exc:  # a URL requests cannot parse (requests.InvalidURL and kin)
        raise JobsApiAddressError(f"{jobs_api} is not a Ray Jobs API address: {exc}") from exc
    slug = re.sub(r"[^a-z0-9]+", "-", job_spec.name.lower()).strip("-")[:40] or "job"
    submission_id = f"tunelab-{slug}-{uuid.uuid4().hex[:8]}"
    client.submit_job(
        entrypoint="tunelab run-spec",
        submission_id=submission_id,
        runtime_env={"env_vars": {"TUNELAB_SPEC_JSON": job_spec.model_dump_json()}},
    )
    if not wait:
        return submission_id, str(client.get_job_status(submission_id))
    shown = 0
    while True:
        state = str(client.get_job_status(submission_id))
        logs = client.get_job_logs(submission_id)
        if echo and len(logs) > shown:
            echo(logs[shown:])
            shown = len(logs)
        if state in TERMINAL_RAY_JOB_STATES:
            return submission_id, state
        time.sleep(poll_s)
