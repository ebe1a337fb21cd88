"""Replay: answer measurements from a recorded exhaustive sweep instead of a device.

A sweep is a job that measured its whole space. Replaying a strategy against it gives
the same candidates the recorded latencies, so strategies are compared offline,
deterministically and in seconds. A sweep is read from the database (a job id) or from
a file written by `save_sweep` (JSON, optionally gzipped: the job's spec and one row
per trial, with every timed repeat), which is how the committed sweeps under
`bench/data/` travel.

A sweep replays over the candidates it recorded (in grid order), not over whatever the
kind's space is today: a sweep recorded before the space changed still replays, and a
strategy that asks for a candidate the sweep lacks gets a ReplayError saying so. Other
sweeps of the same kind can be given as priors (a warm start: see `priors.py`); never
the replayed workload itself.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, update

from tunelab.platform import jobs
from tunelab.platform.kinds import candidate_key, canonical_json, get_kind
from tunelab.platform.noise import TIE_TOLERANCE, decide
from tunelab.platform.recorder import Recorder
from tunelab.platform.search.priors import PriorTrial, target_family
from tunelab.platform.search.space import ListSpace, Space, as_space
from tunelab.platform.search.strategies import Prediction, make_strategy
from tunelab.platform.spec import JobSpec, SearchSpec, parse_spec
from tunelab.schema.models import Environment, Job, JobStatus, TrialStatus

log = logging.getLogger(__name__)


class ReplayError(Exception):
    """The sweep cannot answer this replay (missing, incomplete, or not a sweep)."""


@dataclass
class Sweep:
    """A recorded job: its spec, and per candidate its status and latencies."""

    spec: JobSpec
    trials: dict[str, dict[str, Any]]  # candidate key -> {params, status, latency_s, extra}
    source: str = ""
    # The recording node's environment (host, CPU, library versions), where known.
    environment: dict[str, Any] | None = None

    def machine_note(self) -> str:
        """Which machine a replay's analytical model describes: the recording node's
        calibration carried in the spec's target, or (a sweep recorded before sweeps
        carried it) the machine that replays, so its figures are that host's."""
        machine = getattr(self.spec.target, "machine", None)
        if getattr(self.spec.target, "kind", None) != "llvm":
            return "no CPU calibration needed"
        if machine is None:
            return "no calibration recorded: modelled as THIS host (figures vary by host)"
        where = (self.environment or {}).get("cpu_model") or "the recording node"
        return (
            f"modelled as the recording machine ({where}: {machine.clock_ghz} GHz, "
            f"{machine.flops_per_cycle:g} FLOP/cycle, {machine.vector_registers} vector "
            f"registers, {machine.threads} threads)"
        )

    def latency(self, key: str) -> float | None:
        """Median seconds of a candidate, None if it failed; ReplayError if never measured."""
        if key not in self.trials:
            raise ReplayError(f"{self.source}: candidate {key} was not measured in the sweep")
        t = self.trials[key]
        return t["latency_s"] if t["status"] == "ok" else None

    def candidates(self) -> list[dict[str, Any]]:
        """The searched (non-baseline) candidates the sweep recorded, in grid order: by
        each parameter's sorted values, the first parameter varying slowest (the kind's
        own order for a product space), whatever order they were recorded in."""
        params = [t["params"] for t in self.trials.values() if "baseline" not in t["params"]]
        names = list(dict.fromkeys(n for p in params for n in p))
        rank: dict[str, dict[str, int]] = {}
        for name in names:
            values = {canonical_json(p[name]): p[name] for p in params if name in p}
            try:
                ordered = sorted(values, key=lambda v: values[v])
            except TypeError:  # values of mixed types: their JSON text
                ordered = sorted(values)
            rank[name] = {v: i for i, v in enumerate(ordered)}
        return sorted(
            params,
            key=lambda p: tuple(rank[n][canonical_json(p[n])] if n in p else -1 for n in names),
        )

    def space(self) -> ListSpace:
        """The sweep's candidates as the space a replay searches."""
        return ListSpace(self.candidates())

    def repeats(self, key: str) -> list[float] | None:
        """Every timed repeat of a candidate, if the sweep kept them."""
        return self.trials[key].get("latencies_s") or None

    def tied_with_best(self) -> set[str]:
        """Candidates a strategy may stop at: the best and those the protocol's verdict
        (`noise.decide` / `noise.judge`) calls tied with it: medians at most
        `TIE_TOLERANCE` apart, judged on every recorded repeat where the sweep kept them
        (a gap below the threshold is a tie however sure the interval is of it)."""
        best = self.best()
        searched = {
            k: v for k, t in self.trials.items()
            if "baseline" not in t["params"] and (v := self.latency(k)) is not None
        }  # fmt: skip
        leader = min((k for k, v in searched.items() if v == best), key=str)
        close = sorted(
            (k for k, v in searched.items() if v / best - 1 <= TIE_TOLERANCE and k != leader),
            key=lambda k: (searched[k], k),
        )
        repeats = {k: r for k in (leader, *close) if len(r := self.repeats(k) or []) > 1}
        if leader not in repeats:
            return {leader, *close}
        verdict = decide({k: repeats[k] for k in (leader, *close) if k in repeats}, rounds=1)
        judged = {verdict.winner, *(c.key for c in verdict.tied)}
        return {leader, *judged, *(k for k in close if k not in repeats)}

    def priors(self) -> list[PriorTrial]:
        """This sweep's successful trials as prior trials for another workload's search."""
        kind = get_kind(self.spec.kind)
        out = []
        for key in (candidate_key(p) for p in self.candidates()):
            value = self.latency(key)
            if value is not None and value > 0:
                params = self.trials[key]["params"]
                features = kind.model_features(self.spec, params)
                out.append(PriorTrial(self.source, params, features, value))
        return out

    def target_kind(self) -> str:
        """The sweep's kind of target (`cuda`, `llvm`), as priors are matched by."""
        return target_family(get_kind(self.spec.kind).describe_target(self.spec))

    def best(self) -> float:
        """The best searched (non-baseline) latency of the sweep."""
        values = [self.latency(k) for k, t in self.trials.items() if "baseline" not in t["params"]]
        ok = [v for v in values if v is not None]
        if not ok:
            raise ReplayError(f"{self.source}: no successful trial to replay against")
        return min(ok)


def load_sweep(source: str | int | Path, engine: Engine | None = None) -> Sweep:
    """A sweep from a job id (in `engine`'s database) or a sweep file."""
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        if engine is None:
            raise ReplayError("a job id needs a database")
        job = jobs.get_job(engine, int(source))
        trials = jobs.trials(engine, job.id)  # one read: the rows and their environments
        rows = {
            t.candidate: {
                "params": t.params,
                "status": str(t.status),
                "latency_s": t.value,
                "latencies_s": t.latencies_s,
                "extra": {**(t.extra or {}), **({"baseline": t.baseline} if t.baseline else {})},
            }
            for t in trials
            if t.status != "running"
        }
        env = _environment(engine, [t.environment_id for t in trials])
        return Sweep(parse_spec(job.spec, f"job {job.id}"), rows, f"job {job.id}", env)
    path = Path(source)
    if not path.is_file():
        raise ReplayError(f"{path}: no such sweep file")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        data = json.load(f)
    rows = {candidate_key(t["params"]): t for t in data["trials"]}
    return Sweep(parse_spec(data["spec"], str(path)), rows, str(path), data.get("environment"))


def _environment(engine: Engine, ids: list[int | None]) -> dict[str, Any] | None:
    """The environment most of a job's trials were measured in (the recording node)."""
    counts = Counter(i for i in ids if i is not None)
    if not counts:
        return None
    with engine.connect() as conn:
        env = (
            conn.execute(
                select(Environment.__table__).where(Environment.id == counts.most_common(1)[0][0])
            )
            .mappings()
            .first()
        )
    if env is None:
        return None
    cols = ("host", "cpu_model", "gpu_model", "cuda_version", "tvm_version", "torch_version",
            "python_version", "fingerprint")  # fmt: skip
    return {c: env[c] for c in cols}


def save_sweep(engine: Engine, job_id: int, path: str | Path) -> int:
    """Write a recorded job as a sweep file; returns the number of trials written."""
    sweep = load_sweep(job_id, engine)
    keep = ("baseline", "gate", *get_kind(sweep.spec.kind).replay_keys)
    trials = [
        {
            "params": t["params"],
            "status": t["status"],
            "latency_s": float(f"{t['latency_s']:.6g}") if t["latency_s"] else None,
            # every timed repeat, so ties can be judged as the noise-aware winner does
            "latencies_s": _repeats(t.get("latencies_s")),
            "extra": {k: v for k, v in t["extra"].items() if k in keep},
        }
        for t in sweep.trials.values()
    ]
    # The spec as the job ran it: its target carries the recording node's calibration
    # (`target.machine`), so a replay models that machine wherever it runs.
    data = {"spec": sweep.spec.model_dump(mode="json"), "environment": sweep.environment,
            "trials": trials}  # fmt: skip
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as f:
        json.dump(data, f, separators=(",", ":"))
    return len(trials)


def _repeats(values: list[float] | None) -> list[float] | None:
    return [float(f"{x:.6g}") for x in values] if values else None


@dataclass
class ReplayResult:
    """What a strategy did against a sweep, trial by trial."""

    strategy: str
    seed: int
    keys: list[str] = field(default_factory=list)
    latencies: list[float | None] = field(default_factory=list)
    predictions: list[Prediction | None] = field(default_factory=list)

    def best_so_far(self) -> list[float]:
        best, out = math.inf, []
        for v in self.latencies:
            if v is not None:
                best = min(best, v)
            out.append(best)
        return out

    def trials_to_reach(self, target: float) -> int | None:
        """1-based trial at which best-so-far first reaches `target` seconds or better."""
        for i, b in enumerate(self.best_so_far()):
            if b <= target:
                return i + 1
        return None

    def trials_to_find(self, keys: set[str]) -> int | None:
        """1-based trial at which one of `keys` (e.g. `Sweep.tied_with_best`) is measured."""
        for i, key in enumerate(self.keys):
            if key in keys:
                return i + 1
        return None


def prior_problem(sweep: Sweep, other: Sweep) -> str | None:
    """Why `other` cannot warm-start a replay of `sweep`, or None: a prior must be another
    workload of the same kind, on the same kind of target."""
    if other.spec.kind != sweep.spec.kind or other.target_kind() != sweep.target_kind():
        return (
            f"{other.source}: a {other.spec.kind} sweep on {other.target_kind()} cannot "
            f"warm-start a {sweep.spec.kind} search on {sweep.target_kind()}"
        )
    if canonical_json(other.spec.workload) == canonical_json(sweep.spec.workload):
        return (
            f"{other.source}: measures the replayed workload itself; priors must come "
            "from other workloads"
        )
    return None


def check_priors(sweep: Sweep, others: list[Sweep]) -> None:
    """ReplayError unless every prior sweep may warm-start `sweep` (`prior_problem`): a
    replay never learns from the workload it is scored on."""
    for other in others:
        if problem := prior_problem(sweep, other):
            raise ReplayError(problem)


def replay(
    sweep: Sweep,
    search: SearchSpec | dict[str, Any],
    *,
    priors: list[Sweep] | None = None,
    space: Space | list[dict[str, Any]] | None = None,
    until: Callable[[ReplayResult], bool] | None = None,
) -> ReplayResult:
    """Run a strategy against a sweep: the driver loop without Ray, a batch at a time.

    It searches the sweep's own candidates unless `space` is given (e.g. the kind's space
    today), which the sweep must cover. `priors`: other workloads' sweeps, handed to a
    strategy that warm-starts as the driver hands it the database's prior trials.
    `until`: stop after the first batch for which it returns True."""
    if isinstance(search, dict):
        search = SearchSpec.model_validate({**sweep.spec.search.model_dump(), **search})
    spec = sweep.spec.model_copy(update={"search": search})
    kind = get_kind(spec.kind)
    if space is None:
        space = sweep.space()
    else:
        space = as_space(space)
        missing = [space.params(i) for i in range(len(space)) if space.key(i) not in sweep.trials]
        if missing:
            raise ReplayError(
                f"{sweep.source}: {len(missing)} of the {len(space)} candidates to search were "
                f"not measured in the sweep (e.g. {canonical_json(missing[0])}); was it "
                "recorded over another space? Replay over the sweep's own candidates instead"
            )
    check_priors(sweep, priors or [])
    strategy = make_strategy(
        space, search, lambda p: kind.model_features(spec, p), kind=kind,
        direction=kind.primary().direction,
        priors=lambda: [t for other in priors or [] for t in other.priors()],
    )  # fmt: skip
    result = ReplayResult(
        search.strategy + (f"/{search.cost_model}" if search.strategy == "model" else ""),
        search.seed,
    )
    done: set[str] = set()
    while True:
        batch = strategy.ask(search.batch_size, done)
        if not batch:
            return result
        answers = [(key, sweep.latency(key)) for key, _ in batch]
        for key, seconds in answers:
            result.keys.append(key)
            result.latencies.append(seconds)
            result.predictions.append(strategy.prediction(key))
            done.add(key)
        if until is not None and until(result):
            return result
        for key, seconds in answers:  # the batch is measured together, then the model learns
            strategy.tell(key, seconds)


def record_replay(engine: Engine, sweep: Sweep, result: ReplayResult, search: SearchSpec) -> int:
    """Store a replay as a completed job (its trials carry the recorded latencies, every
    repeat where the sweep kept them, and the predictions made during the replay), so the
    dashboard can show it. The job plans exactly the trials the replay ran, as a driver
    would have. Returns its id.

    Recorded whole or not at all: every trial in one transaction. If that fails (a full
    disk), the job, of which nothing was recorded, is deleted again, or where even that
    fails, marked failed with the reason; no job is left pending for nothing to run."""
    spec = sweep.spec.model_copy(
        update={"search": search, "name": f"{sweep.spec.name} replay {result.strategy}"}
    )
    job_id = jobs.create_job(engine, spec)
    try:
        _record(engine, job_id, spec, sweep, result)
    except BaseException as exc:
        _abandon(engine, job_id, exc)
        raise
    return job_id


def _abandon(engine: Engine, job_id: int, exc: BaseException) -> None:
    """Delete a recorded replay's job with no trials; else (or if that fails) mark it failed."""
    from sqlalchemy import delete, exists, func

    from tunelab.schema.models import Trial

    # Closed first: SQLite's write-ahead log keeps the failed transaction's room (on a
    # full disk, all there was) until its last connection closes.
    engine.dispose()
    try:
        with engine.begin() as conn:
            conn.execute(
                delete(Job).where(Job.id == job_id, ~exists().where(Trial.job_id == job_id))
            )
            if not conn.execute(select(func.count()).where(Job.id == job_id)).scalar_one():
                return
    except Exception as gone:  # marking it failed is tried next
        log.warning("job %s: not deleted (%s)", job_id, gone)
    lines = str(exc).strip().splitlines()
    why = f"recording the replay failed: {type(exc).__name__}: {lines[0] if lines else ''}"
    try:
        jobs.finish(engine, job_id, JobStatus.failed, why[:2000])
    except Exception as also:
        log.warning("job %s: could not be marked failed (%s) after %s", job_id, also, why)


def _record(engine: Engine, job_id: int, spec: JobSpec, sweep: Sweep, result: ReplayResult) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(n_planned=len(result.keys), started_at=datetime.now(UTC))
        )
    kind = get_kind(spec.kind)
    n = len(result.keys) + 1  # one flush, one transaction
    recorder = Recorder(engine, job_id, objective=kind.primary(), max_rows=n, max_buffer=n + 1)
    for key, pred in zip(result.keys, result.predictions, strict=True):
        t = sweep.trials[key]
        extra = {k: v for k, v in t.get("extra", {}).items() if k != "baseline"}
        recorder.add(
            candidate=key,
            params=t["params"],
            status=TrialStatus(t["status"]),
            latencies_s=_recorded_repeats(t),
            predicted_cost=pred.seconds if pred else None,
            model=pred.model if pred else None,
            model_version=pred.version if pred else None,
            baseline=t["params"].get("baseline"),
            extra={**extra, "replayed_from": sweep.source},
        )
    recorder.flush()
    jobs.finish(engine, job_id, JobStatus.completed)


def _recorded_repeats(t: dict[str, Any]) -> list[float] | None:
    """A sweep trial's repeats for a recorded replay: every one the sweep kept, else its
    median alone; none for a failed trial."""
    if not t["latency_s"]:
        return None
    return list(t.get("latencies_s") or []) or [t["latency_s"]]
