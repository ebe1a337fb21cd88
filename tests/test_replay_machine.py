"""A replay models the machine that recorded its sweep, whatever host replays it.

A sweep file carries the recording job's resolved spec, whose target holds the measuring
node's calibration (`target.machine`). The analytical model reads that, never the
replaying host's: two hosts replaying the same sweep propose the same candidates and
print the same figures. The foreign host here is a calibration injected in place of this
machine's (an AVX2 core with 16 vector registers and other caches): a stand-in for
running on another host, which cannot exist in one test process.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tunelab.platform.search import replay as replay_mod
from tunelab.platform.search.replay import load_sweep, replay, save_sweep
from tunelab.workers.pipeline_search import perf_model
from tunelab.workers.pipeline_search.calibrate import CpuMachine

REPO = Path(__file__).resolve().parent.parent
SWEEP = REPO / "bench/data/conv2d-14x14x64-cpu.json.gz"

RECORDER = CpuMachine(
    threads=2, cores=2, clock_ghz=3.7, flops_per_cycle=64.0, lanes=16, vector_registers=32,
    fma_latency=4.0, all_core_scaling=0.98, l1d_bytes=48 * 1024, l2_bytes=1024 * 1024,
    l3_bytes=32 * 2**20, mem_gbps=30.0,
)  # fmt: skip
FOREIGN = CpuMachine(
    threads=2, cores=2, clock_ghz=2.4, flops_per_cycle=32.0, lanes=8, vector_registers=16,
    fma_latency=5.0, all_core_scaling=0.6, l1d_bytes=32 * 1024, l2_bytes=512 * 1024,
    l3_bytes=8 * 2**20, mem_gbps=7.2,
)  # fmt: skip


def _with_machine(tmp_path: Path, machine: CpuMachine | None) -> Path:
    """The committed sweep, written again with `machine` as its recording calibration."""
    with gzip.open(SWEEP, "rt") as f:
        data = json.load(f)
    data["spec"]["target"]["machine"] = machine.to_dict() if machine else None
    data["environment"] = {"cpu_model": "recording CPU"} if machine else None
    path = tmp_path / ("with.json.gz" if machine else "without.json.gz")
    with gzip.open(path, "wt") as f:
        json.dump(data, f)
    return path


def _replays(path: Path, monkeypatch: pytest.MonkeyPatch, host: CpuMachine) -> list[list[str]]:
    """Analytical and combined replays of the sweep with `host` as the replaying machine."""
    monkeypatch.setattr(perf_model, "local_machine", lambda threads=None: host)
    sweep = load_sweep(path)
    search = {"strategy": "model", "batch_size": 8, "budget": 40, "seed": 0}
    return [replay(sweep, {**search, "cost_model": m}).keys for m in ("analytical", "combined")]


def test_a_sweep_with_its_calibration_replays_alike_on_any_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _with_machine(tmp_path, RECORDER)
    here = _replays(path, monkeypatch, RECORDER)
    elsewhere = _replays(path, monkeypatch, FOREIGN)
    assert here == elsewhere
    note = load_sweep(path).machine_note()
    assert "recording machine (recording CPU" in note and "32 vector registers" in note


def test_a_sweep_without_calibration_depends_on_the_host_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control: what the carried calibration prevents. Without it the model describes
    # whichever host replays, so the proposals change with the host.
    path = _with_machine(tmp_path, None)
    assert _replays(path, monkeypatch, RECORDER) != _replays(path, monkeypatch, FOREIGN)
    assert "THIS host" in load_sweep(path).machine_note()


def test_saved_sweep_carries_the_resolved_calibration_and_environment(
    tmp_path: Path, sqlite_url: str
) -> None:
    """`replay save` writes the job's spec as it ran (the driver keeps the resolved
    target on the job) and the recording environment."""
    from tunelab.platform import jobs
    from tunelab.platform.recorder import Recorder
    from tunelab.platform.spec import parse_spec
    from tunelab.schema.db import get_engine
    from tunelab.schema.models import TrialStatus

    sqlite_engine = get_engine(sqlite_url)

    sweep = load_sweep(_with_machine(tmp_path, RECORDER))
    job_id = jobs.create_job(sqlite_engine, sweep.spec)
    rec = Recorder(sqlite_engine, job_id)
    for key, t in list(sweep.trials.items())[:5]:
        rec.add(candidate=key, params=t["params"], status=TrialStatus(t["status"]),
                latencies_s=t.get("latencies_s") or [t["latency_s"]])  # fmt: skip
    rec.flush()
    out = tmp_path / "saved.json.gz"
    assert save_sweep(sqlite_engine, job_id, out) == 5
    saved = load_sweep(out)
    assert saved.spec.target.machine == RECORDER
    assert parse_spec(saved.spec.model_dump(mode="json")).target.machine == RECORDER
    assert replay_mod.load_sweep(out).trials.keys() == saved.trials.keys()


def test_committed_sweeps_carry_the_recording_calibration() -> None:
    """What makes bench/search_efficiency.py print the same figures on any host."""
    for path in sorted((REPO / "bench/data").glob("*.json.gz")):
        sweep = load_sweep(path)
        assert sweep.spec.target.machine is not None, path.name
        assert "recording machine" in sweep.machine_note(), path.name
