"""The warm local Ray: drivers with no --ray share one Ray per data directory (started on
ports of its own, kept warm, stopped by `tunelab cluster stop` or when idle); an unreachable
--ray fails fast in one line; a job whose workers cannot be placed waits its turn.

Real Ray and real `tunelab` processes throughout; every test stops the clusters it started
and checks that no process of theirs is left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tunelab.platform import cluster

TRIVIAL = {"name": "small", "kind": "testing-trivial", "workload": {"n": 2}}
ONE_TRIAL = {"name": "one", "kind": "testing-trivial", "workload": {"n": 1}}


def _spec(tmp_path: Path, spec: dict[str, Any], name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


class Dirs:
    """Data directories of a test, each with its own warm Ray, all stopped at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.made: list[Path] = []

    def env(self, name: str, **extra: str) -> dict[str, str]:
        data = self.tmp_path / name
        data.mkdir(exist_ok=True)
        if data not in self.made:
            self.made.append(data)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNELAB_"))}
        env.update(TUNELAB_DATA_DIR=str(data), TUNELAB_RAY_IDLE_S="300", COLUMNS="200")
        env.update(extra)
        return env

    @staticmethod
    def temp_dir(data: Path) -> str:
        return cluster._temp_dir(data / "cluster")

    def leftovers(self) -> list[str]:
        """Processes of any of these clusters still running: their Ray, their reaper."""
        marks = [self.temp_dir(d) for d in self.made] + [str(d / "cluster") for d in self.made]
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if proc.pid != os.getpid() and any(m in cmdline for m in marks):
                found.append(f"{proc.pid} {cmdline[:160]}")
        return found


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[Dirs]:
    made = Dirs(tmp_path)
    try:
        yield made
    finally:
        for data in made.made:
            cluster.stop(data / "cluster")
        assert _wait_for(lambda: not made.leftovers(), 30), made.leftovers()


def _wait_for(cond: Callable[[], Any], timeout_s: float, every_s: float = 0.5) -> Any:
    """`cond()` once truthy, polled until `timeout_s` passes (then its last value)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


def _tunelab(*args: str) -> list[str]:
    return [sys.executable, "-m", "tunelab.platform.cli", *args]


def _run(env: dict[str, str], *args: str, timeout: float = 600) -> tuple[int, str, str, float]:
    t0 = time.monotonic()
    proc = subprocess.run(_tunelab(*args), env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0


def _submit(spec: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """`tunelab submit SPEC --wait`, running."""
    return subprocess.Popen(_tunelab("submit", str(spec), "--wait"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _heads(d: Dirs, data: Path) -> int:
    """GCS servers running for the warm Ray of `data`."""
    mark = d.temp_dir(data)
    return sum(
        1
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "gcs_server" and mark in " ".join(p.info["cmdline"] or [])
    )


def _jobs(env: dict[str, str]) -> list[dict[str, Any]]:
    code, out, err, _ = _run(env, "jobs", "--format", "json", timeout=120)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.slow
def test_drivers_share_one_warm_cluster_per_data_directory(tmp_path: Path, dirs: Dirs) -> None:
    spec = _spec(tmp_path, TRIVIAL, "small")
    env_a, env_b = dirs.env("a"), dirs.env("b")
    t0 = time.monotonic()
    procs = [
        (name, subprocess.Popen(_tunelab("submit", str(spec), "--wait"), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for name, env in (("a1", env_a), ("a2", env_a), ("b1", env_b))
    ]  # fmt: skip
    walls = {}
    for name, proc in procs:
        out, err = proc.communicate(timeout=900)
        walls[name] = time.monotonic() - t0
        assert proc.returncode == 0, f"{name}: {err[-3000:]}"
    # One Ray per data directory: both drivers of `a` joined the one the first started.
    assert _heads(dirs, tmp_path / "a") == 1
    assert _heads(dirs, tmp_path / "b") == 1
    state_a = cluster.load_state(tmp_path / "a" / "cluster")
    state_b = cluster.load_state(tmp_path / "b" / "cluster")
    assert state_a and state_b and state_a.ray_address != state_b.ray_address
    assert [j["status"] for j in _jobs(env_a)] == ["completed", "completed"]
    assert [j["status"] for j in _jobs(env_b)] == ["completed"]

    # Warm: the next job of `a` pays no Ray start-up; named by its address, its token is
    # found for the user.
    warm = [_run(env_a, "submit", str(spec), "--wait"),
            _run(env_a, "submit", str(spec), "--wait", "--ray", state_a.ray_address)]  # fmt: skip
    assert all(code == 0 for code, *_ in warm), warm[-1][2][-3000:]
    code, out, _, _ = _run(env_a, "cluster", "status", timeout=120)
    assert code == 0 and "warm local Ray" in out and state_a.ray_address in out
    print(
        f"\nwall times (load {os.getloadavg()[0]:.1f}): cold, 3 started together "
        + ", ".join(f"{k} {v:.1f} s" for k, v in walls.items())
        + "; warm "
        + ", ".join(f"{w:.1f} s" for *_, w in warm)
    )
    assert max(w for *_, w in warm) < 300  # a sanity bound, no timing claim

    code, out, _, _ = _run(env_a, "cluster", "stop", timeout=120)
    assert code == 0 and "ray-head" in out
    assert _wait_for(lambda: _heads(dirs, tmp_path / "a") == 0, 30)
    assert cluster.load_state(tmp_path / "a" / "cluster") is None
    assert _heads(dirs, tmp_path / "b") == 1  # the other data directory's is untouched


def test_unreachable_ray_fails_fast_in_one_line(tmp_path: Path, dirs: Dirs) -> None:
    env = dirs.env("a")
    code, _, err, wall = _run(env, "submit", str(_spec(tmp_path, ONE_TRIAL, "one")),
                              "--wait", "--ray", "127.0.0.1:1", timeout=120)  # fmt: skip
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 3, err
    assert wall < 30
    assert len(lines) == 1 and lines[0].startswith("error: no Ray cluster answers at 127.0.0.1:1")
    assert "Traceback" not in err
    [job] = _jobs(env)  # left failed with the reason: `tunelab resume` runs it
    assert job["status"] == "failed" and job["done"] == 0
    assert cluster.load_state(tmp_path / "a" / "cluster") is None  # no local Ray was started


def test_a_local_ray_that_will_not_start_exits_3_and_leaves_nothing(
    tmp_path: Path, dirs: Dirs
) -> None:
    # Too short a start-up for any machine: every try fails; each is cleaned up.
    env = dirs.env("a", TUNELAB_RAY_START_TIMEOUT_S="0.5", TUNELAB_RAY_START_ATTEMPTS="2")
    code, _, err, _ = _run(env, "submit", str(_spec(tmp_path, ONE_TRIAL, "one")), "--wait",
                           timeout=300)  # fmt: skip
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 3, err
    assert len(lines) == 1 and "Ray did not start on this machine in 2 tries" in lines[0]
    assert "TUNELAB_RAY_START_TIMEOUT_S" in lines[0]  # what to try
    [job] = _jobs(env)
    assert job["status"] == "failed" and job["done"] == 0
    assert cluster.load_state(tmp_path / "a" / "cluster") is None
    assert _wait_for(lambda: not dirs.leftovers(), 30), dirs.leftovers()


@pytest.mark.slow
def test_a_job_starts_and_completes_under_load_and_the_idle_cluster_stops(
    tmp_path: Path, dirs: Dirs
) -> None:
    env = dirs.env("a", TUNELAB_RAY_IDLE_S="5")
    busy = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        code, _, err, wall = _run(env, "submit", str(_spec(tmp_path, ONE_TRIAL, "one")),
                                  "--wait")  # fmt: skip
        load = os.getloadavg()[0]
    finally:
        for proc in busy:
            proc.kill()
        for proc in busy:
            proc.wait()
    assert code == 0, err[-3000:]
    print(f"\none-trial job, cold, beside {len(busy)} busy loops: {wall:.1f} s (load {load:.1f})")
    # No driver left: the reaper stops the cluster after its 5 s of idle time.
    data = tmp_path / "a" / "cluster"
    assert _wait_for(lambda: cluster.load_state(data) is None, 120), cluster.status(data)
    assert _wait_for(lambda: not dirs.leftovers(), 30), dirs.leftovers()


@pytest.mark.slow
def test_a_job_without_room_waits_for_resources_then_runs(tmp_path: Path, dirs: Dirs) -> None:
    env = dirs.env("a", TUNELAB_RAY_CPUS="2")
    wl = {"runs": 2, "steps": 60, "checkpoint_every": 20, "step_s": 0.25, "workers": 2}
    holder = _spec(tmp_path, {"name": "holder", "kind": "testing-episodic", "workload": wl},
                   "holder")  # fmt: skip
    small = {"runs": 1, "steps": 3, "checkpoint_every": 3, "step_s": 0.05, "workers": 1}
    queued = _spec(tmp_path, {"name": "queued", "kind": "testing-episodic", "workload": small},
                   "queued")  # fmt: skip
    dropped = _spec(tmp_path, {"name": "dropped", "kind": "testing-episodic", "workload": small},
                    "dropped")  # fmt: skip
    first = subprocess.Popen(_tunelab("submit", str(holder), "--wait"), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    second = third = None
    try:
        # Both CPUs held by the first job's two evaluations (each runs >= 15 s).
        from tunelab.platform import api

        db = f"sqlite:///{tmp_path / 'a' / 'tunelab.db'}"

        def evaluating() -> bool:
            jobs = api.list_jobs(db=db)
            return bool(jobs) and api.status_counts(jobs[0].id, db=db).get("running", 0) == 2

        assert _wait_for(evaluating, 300), first.poll() or "the first job never evaluated"
        second, third = (_submit(spec, env) for spec in (queued, dropped))

        def waiting(name: str) -> Callable[[], dict[str, Any] | None]:
            def check() -> dict[str, Any] | None:
                job = {j["name"]: j for j in _jobs(env)}.get(name)
                return job if job and job["status"] == "waiting for resources" else None

            return check

        seen = _wait_for(waiting("queued"), 120, every_s=1)
        assert seen, _jobs(env)
        # A queued job cancelled: its driver stops waiting and says so (exit 5).
        gone = _wait_for(waiting("dropped"), 120, every_s=1)
        assert gone, _jobs(env)
        assert _run(env, "cancel", str(gone["id"]), timeout=120)[0] == 0
        third.communicate(timeout=120)
        assert third.returncode == 5
        code, out, _, _ = _run(env, "show", str(seen["id"]), timeout=120)
        assert code == 0
        assert "status: waiting for resources" in out and "1 CPU each, 0 CPU free of 2" in out
        holder_rows = [j for j in _jobs(env) if j["name"] == "holder"]
        assert holder_rows[0]["status"] == "running"  # it waits while the other runs
        _, err1 = first.communicate(timeout=600)
        assert first.returncode == 0, err1[-3000:]
        _, err2 = second.communicate(timeout=600)
        assert second.returncode == 0, err2[-3000:]
        rows = {j["name"]: j for j in _jobs(env)}
        assert rows["queued"]["status"] == "completed" and rows["queued"]["done"] == 1
    finally:
        for proc in (first, second, third):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
