"""Failures are recorded, never lost, and never win: wrong, hung and crashing kernels."""

from __future__ import annotations

import pytest

from tunelab.platform import jobs
from tunelab.platform.execution import run_job
from tunelab.platform.spec import parse_spec
from tunelab.schema.db import get_engine
from tunelab.schema.models import JobStatus


@pytest.mark.slow
def test_every_failure_is_recorded_and_only_a_correct_kernel_wins(
    db_url: str, ray_cluster: str, faulty_kind: object, tmp_path
) -> None:
    spec = parse_spec({
        "name": "faults",
        "kind": "faulty-gemm",
        "workload": {"M": 64, "N": 64, "K": 64, "marker_dir": str(tmp_path)},
        "space": {"variant": ["wrong", "good", "hang", "crash_once", "crash_always",
                              "build_error", "build_hang"]},
        "measure": {"repeats": 3, "run_timeout_s": 3, "build_timeout_s": 10, "max_attempts": 2},
    })  # fmt: skip
    engine = get_engine(db_url)
    job_id = jobs.create_job(engine, spec)
    assert run_job(engine, job_id) == JobStatus.completed

    by_variant = {t.params["variant"]: t for t in jobs.trials(engine, job_id)}
    assert len(by_variant) == 7
    status = {v: t.status for v, t in by_variant.items()}
    assert status == {
        "wrong": "wrong_result",  # it ran and was fast, but computed the wrong answer
        "good": "ok",
        "hang": "timeout",  # a kernel that never returns: its worker is killed
        "crash_once": "ok",  # the worker died under it once; the retry succeeded
        "crash_always": "worker_lost",  # died on every one of max_attempts
        "build_error": "build_error",
        "build_hang": "timeout",  # a build that never returns: its worker is killed
    }
    assert "max error" in by_variant["wrong"].error
    assert by_variant["wrong"].latency_median_s is None
    assert "exceeded 3 s" in by_variant["hang"].error
    # The crash is on record whether it hit crash_once alone (an attempt charged) or a
    # chunk of cheap candidates (the chunk is split and each member rerun alone, uncharged).
    # (A chunk may also have been split for another member's timeout: that is noted too,
    # but it is no death.)
    once = by_variant["crash_once"]
    # Its own death alone (charged), or its chunk's (split, uncharged); when a chunk-mate
    # killed the chunk first, the split is noted and then its own death.
    own = [n for n in once.attempt_errors if n.startswith("measure worker died")]
    splits = [n for n in once.attempt_errors if "lost (worker died" in n]
    assert len(own) <= 1 and (own or splits), once.attempt_errors
    assert once.attempts == (2 if own else 1)
    # Charged exactly max_attempts times, however it was first chunked.
    assert by_variant["crash_always"].attempts == 2
    assert "measure worker died (attempt 2)" in by_variant["crash_always"].error
    assert "on purpose" in by_variant["build_error"].error
    assert "build exceeded 10 s" in by_variant["build_hang"].error

    job = jobs.get_job(engine, job_id)
    assert (job.n_done, job.n_ok, job.n_failed) == (7, 2, 5)
    assert job.best_trial_id in (by_variant["good"].id, by_variant["crash_once"].id)
    top = jobs.trials(engine, job_id, top=10)
    assert {t.params["variant"] for t in top} == {"good", "crash_once"}
