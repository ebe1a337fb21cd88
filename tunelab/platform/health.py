"""The node-health guard: what else runs on the node that measures, and waiting for quiet.

A measurement on a node that other work shares measures the other work as much as the
candidate. Before a measurement (or a final round) the worker samples its node over a
short window: runnable tasks that are not its own (from /proc: every thread in state R
outside this process), the load average, CPU steal (/proc/stat) and the clock
(/proc/cpuinfo), where the kernel exposes them. The node is *busy* when the runnable
tasks not ours reach `busy_per_core` per core on average over the window, or steal
passes `MAX_STEAL`. `wait_quiet` samples again until the node is quiet or its bound
passes; then the measurement goes ahead all the same and its record says `busy`.

Every record keeps what it saw (`Health.as_json`): trials carry it, a job with a busy
trial is marked, and caches (op costs, calibration, warm-start priors) take nothing
measured busy.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")
WINDOW_S = 0.25  # one sample's window
SAMPLES = 5  # /proc reads per window
MAX_STEAL = 0.10  # share of CPU time stolen by the hypervisor that counts as busy
DEFAULT_BUSY_PER_CORE = 0.5  # runnable tasks not ours per core: 1 busy loop on 2 cores


@dataclass(frozen=True)
class Health:
    """What the node looked like before a measurement."""

    others: float  # runnable tasks not of this process, mean over the window
    cores: int
    load1: float | None
    steal: float | None  # share of CPU time stolen over the window
    mhz: float | None  # mean clock of the cores
    waited_s: float
    busy: bool

    def as_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _cpu_times() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs, from /proc/stat."""
    try:
        first = (PROC / "stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    values = [int(v) for v in first[1:]]
    steal = values[7] if len(values) > 7 else 0
    return steal, sum(values[:8])


def _runnable_not_ours(own: set[int]) -> int | None:
    """Threads in state R whose process is not in `own`, right now."""
    try:
        pids = [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]
    except OSError:
        return None
    count = 0
    for pid in pids:
        if pid in own:
            continue
        try:
            tasks = os.listdir(PROC / str(pid) / "task")
        except OSError:
            continue  # gone, or not ours to read
        for tid in tasks:
            try:
                stat = (PROC / str(pid) / "task" / tid / "stat").read_bytes()
            except OSError:
                continue
            # the state follows the command name, which is in parentheses and may hold ')'
            if stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"R":
                count += 1
    return count


def _mhz() -> float | None:
    try:
        values = [
            float(line.split(":", 1)[1])
            for line in (PROC / "cpuinfo").read_text().splitlines()
            if line.startswith("cpu MHz")
        ]
    except (OSError, ValueError):
        return None
    return sum(values) / len(values) if values else None


# Process titles (Ray sets them) of the platform's measuring workers: a pool kind runs
# several on one node by design, so each counts the others as its own.
OWN_TITLES = (b"ray::MeasureWorker",)


def _own_pids() -> set[int]:
    """This process (its threads are its own load: a thread pool that spins is ours), the
    platform's measuring workers on this node (`OWN_TITLES`) and every process they
    started (a library measured in a child process of its own). Builds, Ray's daemons
    and everything else are others (idle daemons are not runnable, so they cost nothing)."""
    own = {os.getpid()}
    parent: dict[int, int] = {}
    try:
        pids = [p.name for p in PROC.iterdir() if p.name.isdigit()]
    except OSError:
        return own
    for pid in pids:
        try:
            title = (PROC / pid / "cmdline").read_bytes()[:64]
            stat = (PROC / pid / "stat").read_bytes()
        except OSError:
            continue
        if title.startswith(OWN_TITLES):
            own.add(int(pid))
        fields = stat[stat.rfind(b")") + 2 :].split()  # state, ppid, ...
        if len(fields) > 1:
            parent[int(pid)] = int(fields[1])
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(own)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in own:
                own.add(child)
                todo.append(child)
    return own


def sample(
    busy_per_core: float = DEFAULT_BUSY_PER_CORE,
    *,
    window_s: float = WINDOW_S,
    waited_s: float = 0.0,
    samples: int = SAMPLES,
) -> Health:
    """The node over one window of `window_s` seconds (`samples` reads of /proc)."""
    own = _own_pids()
    cores = os.cpu_count() or 1
    before = _cpu_times()
    counts = []
    for _ in range(samples):
        n = _runnable_not_ours(own)
        if n is not None:
            counts.append(n)
        time.sleep(window_s / samples)
    after = _cpu_times()
    steal = None
    if before and after and after[1] > before[1]:
        steal = (after[0] - before[0]) / (after[1] - before[1])
    others = sum(counts) / len(counts) if counts else 0.0
    try:
        load1: float | None = os.getloadavg()[0]
    except OSError:
        load1 = None
    busy = others / cores >= busy_per_core or (steal is not None and steal > MAX_STEAL)
    return Health(others, cores, load1, steal, _mhz(), waited_s, busy)


def wait_quiet(max_wait_s: float, busy_per_core: float = DEFAULT_BUSY_PER_CORE) -> Health:
    """Sample until the node is quiet or `max_wait_s` has passed (0: sample once); the
    last sample, with how long it waited."""
    t0 = time.monotonic()
    while True:
        health = sample(busy_per_core, waited_s=time.monotonic() - t0)
        if not health.busy or time.monotonic() - t0 >= max_wait_s:
            return health
        time.sleep(min(0.25, max(0.0, max_wait_s - (time.monotonic() - t0))))


class Guard:
    """A worker's guard: waits for quiet before measurements, but after a wait that ran
    out it only samples (no second wait) for `cooldown_s`, so a node that stays busy
    costs one bounded wait per cooldown, not one per trial. A quiet sample taken after
    the previous measurement (`after`) less than `fresh_s` ago stands for the node before
    the next: back-to-back short measurements cost one quick sample each, not a window."""

    def __init__(
        self, max_wait_s: float, busy_per_core: float = DEFAULT_BUSY_PER_CORE,
        cooldown_s: float = 60.0, fresh_s: float = 1.0,
    ) -> None:  # fmt: skip
        self.max_wait_s = max_wait_s
        self.busy_per_core = busy_per_core
        self.cooldown_s = cooldown_s
        self.fresh_s = fresh_s
        self._gave_up_at: float | None = None
        self._after: tuple[Health, float] | None = None  # the last `after`, and when

    def after(self) -> Health:
        """A quick sample of the node just after a measurement."""
        health = sample(self.busy_per_core, window_s=0.0, samples=2)
        self._after = (health, time.monotonic())
        return health

    def check(self, *, wait: bool = True) -> Health:
        """Wait (bounded) for quiet and say what the node looked like."""
        if self._after is not None:
            last, at = self._after
            self._after = None  # stands for one measurement only
            if not last.busy and time.monotonic() - at < self.fresh_s:
                return last
        cooling = (
            self._gave_up_at is not None and time.monotonic() - self._gave_up_at < self.cooldown_s
        )
        limit = self.max_wait_s if wait and not cooling else 0.0
        health = wait_quiet(limit, self.busy_per_core)
        if health.busy and limit > 0:
            self._gave_up_at = time.monotonic()
        elif not health.busy:
            self._gave_up_at = None
        return health


def merge(records: list[dict[str, Any] | Health | None]) -> dict[str, Any] | None:
    """One record for several samples (a trial's or a final round's): busy if any was,
    the worst load seen, the waits added up."""
    rs = [r.as_json() if isinstance(r, Health) else r for r in records if r]
    if not rs:
        return None

    def worst(key: str) -> Any:
        vals = [r[key] for r in rs if r.get(key) is not None]
        return max(vals) if vals else None

    return {
        "others": worst("others"),
        "cores": rs[0].get("cores"),
        "load1": worst("load1"),
        "steal": worst("steal"),
        "mhz": min((r["mhz"] for r in rs if r.get("mhz")), default=None),
        "waited_s": round(sum(r.get("waited_s") or 0.0 for r in rs), 4),
        "busy": any(r.get("busy") for r in rs),
        "samples": len(rs),
    }
