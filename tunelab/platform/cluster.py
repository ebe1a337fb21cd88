"""A tunelab cluster on one machine without Docker: PostgreSQL, a Ray head, N Ray workers;
and the warm local Ray that drivers use when no cluster is named.

Everything listens on loopback. Each Ray node is a `ray start --block` process in its own
session; `down` stops exactly the process trees that `up` recorded (matched by pid and
start time, so a reused pid is never touched) and the processes of its own Ray temp dir,
and nothing else on the machine.

The warm local Ray (`join_or_start`): a driver given no cluster joins the one Ray of its
data directory, starting it when none runs: a head with this machine's CPUs, every port
its own (chosen free, so it never clashes with another Ray on the host), a token of its
own, and start-up waits sized for a loaded machine, tried again on failure. Starts are
serialised by a file lock, so drivers started together share one cluster. It stays up
like a build daemon: a small reaper process stops it once no driver has used it for
TUNELAB_RAY_IDLE_S seconds (default 600; 0 stops it when its last driver ends). Drivers
register their pid in the state directory; `tunelab cluster status` shows it and
`tunelab cluster stop` stops it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from hashlib import sha1
from pathlib import Path
from typing import Any

import psutil

from tunelab.config import data_dir

HOST = "127.0.0.1"

log = logging.getLogger(__name__)

ENV_IDLE_S = "TUNELAB_RAY_IDLE_S"
ENV_START_TIMEOUT_S = "TUNELAB_RAY_START_TIMEOUT_S"
ENV_START_ATTEMPTS = "TUNELAB_RAY_START_ATTEMPTS"
ENV_CPUS = "TUNELAB_RAY_CPUS"
DEFAULT_IDLE_S = 600.0
# One try of a start on a loaded machine: Ray's own wait for its raylet is 30 s (fixed in
# ray/_private/node.py), so a start that times out there is tried again.
DEFAULT_START_TIMEOUT_S = 120.0
DEFAULT_START_ATTEMPTS = 3
# One per CPU node of the clusters started here: a job measuring with a whole node
# (`node` placement) holds it, so a second such job queues for the node instead of
# measuring beside the first.
MEASURE_RESOURCE = "tunelab_measure"


class ClusterError(RuntimeError):
    """The cluster cannot be brought up, or its state is not what was expected."""


class ClusterAlreadyUp(ClusterError):
    """A cluster started from the same state directory still runs."""


@dataclass
class Proc:
    role: str
    pid: int
    create_time: float
    log: str
    cmd: list[str]


@dataclass
class ClusterState:
    """What `up` started, saved as JSON in the state directory."""

    ray_address: str
    dashboard_url: str
    db_url: str
    token_path: str
    temp_dir: str
    procs: list[Proc] = field(default_factory=list)
    postgres_dir: str | None = None
    postgres_user: str | None = None
    simulated_gpus: bool = False
    tunelab_dashboard_url: str | None = None
    # The warm local Ray: stops itself after this long unused; None for `up`'s cluster.
    idle_s: float | None = None

    def env(self) -> dict[str, str]:
        """Environment a client needs to submit to this cluster."""
        env = {
            "RAY_ADDRESS": self.ray_address,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": self.token_path,
        }
        if self.db_url:  # the warm local Ray has no database of its own
            env["TUNELAB_DB_URL"] = self.db_url
        return env


def state_dir() -> Path:
    return data_dir() / "cluster"


def _state_file(directory: Path) -> Path:
    return directory / "state.json"


def load_state(directory: Path | None = None) -> ClusterState | None:
    path = _state_file(directory or state_dir())
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    raw["procs"] = [Proc(**p) for p in raw["procs"]]
    return ClusterState(**raw)


def _save(state: ClusterState, directory: Path) -> None:
    _state_file(directory).write_text(json.dumps(asdict(state), indent=2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _ray_bin() -> str:
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else (shutil.which("ray") or "ray")


def has_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    return subprocess.run([smi, "-L"], capture_output=True, check=False).returncode == 0


def _spawn(role: str, cmd: list[str], env: dict[str, str], directory: Path) -> Proc:
    log = directory / f"{role}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip
    return Proc(role, proc.pid, psutil.Process(proc.pid).create_time(), str(log), cmd)


def _alive(p: Proc) -> psutil.Process | None:
    try:
        proc = psutil.Process(p.pid)
        if abs(proc.create_time() - p.create_time) < 1e-3 and proc.status() != "zombie":
            return proc
    except psutil.Error:
        pass
    return None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ClusterError(f"{name}={raw!r} is not a number") from None


def _temp_dir(directory: Path) -> str:
    # Ray's sockets live under temp_dir: keep it short (socket paths are length-limited)
    # and apart from /tmp/ray, so that local `ray.init()`s never join this cluster.
    return f"/tmp/tunelab-ray-{sha1(str(directory.resolve()).encode()).hexdigest()[:8]}"


def _token(directory: Path) -> Path:
    token_path = directory / "ray-token"
    if not token_path.exists():
        token_path.write_text(os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(32))
    token_path.chmod(0o600)
    return token_path


def _own_ports() -> list[str]:
    """Ports Ray's per-node agents would otherwise take from fixed defaults (52365, ...):
    with several nodes on one machine, or another Ray beside them, they would collide."""
    return ["--dashboard-agent-listen-port", str(free_port()),
            "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()),
            "--metrics-export-port", str(free_port())]  # fmt: skip


def _wait_nodes(state: ClusterState, n: int, timeout_s: float = 120) -> None:
    """Wait until the head sees `n` alive nodes (head included)."""
    env = {**os.environ, **state.env()}
    code = (
        "import ray, time, sys\n"
        "ray.init(address=sys.argv[1], log_to_driver=False)\n"
        f"deadline = time.time() + {timeout_s}\n"
        "while sum(n['Alive'] for n in ray.nodes()) < int(sys.argv[2]):\n"
        "    if time.time() > deadline: sys.exit(1)\n"
        "    time.sleep(0.5)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, state.ray_address, str(n)],
        env=env, capture_output=True, text=True, timeout=timeout_s + 60, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise ClusterError(f"the Ray nodes did not all join in {timeout_s:.0f} s:\n"
                           f"{proc.stderr[-2000:]}")  # fmt: skip


# -- PostgreSQL -------------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise ClusterError(f"{name} not found: install PostgreSQL's server, or pass --db URL")


def _as_user(user: str | None, cmd: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        output = (proc.stderr or proc.stdout)[-2000:]
        raise ClusterError(f"`{' '.join(cmd)}` failed:\n{output}")


def start_postgres(directory: Path) -> tuple[str, str, str | None]:
    """initdb + pg_ctl start on a free loopback port; returns (url, data dir, run-as user).

    PostgreSQL refuses to run as root, so as root it runs as the `postgres` user, with its
    data in a directory of its own under /tmp (it may not be able to reach `directory`)."""
    user = "postgres" if os.geteuid() == 0 else None
    if user:
        pgdata = Path(tempfile.mkdtemp(prefix="tunelab-pg-"))
        shutil.chown(pgdata, user)
    else:
        pgdata = directory / "postgres"
        pgdata.mkdir(parents=True, exist_ok=True)
    port = free_port()
    _run(_as_user(user, [_pg_bin("initdb"), "-D", str(pgdata), "-A", "trust", "-U", "postgres"]))
    opts = f"-p {port} -k {pgdata} -c listen_addresses={HOST}"
    log = pgdata / "server.log"
    _run(_as_user(user, [_pg_bin("pg_ctl"), "-D", str(pgdata), "-o", opts, "-l", str(log),
                         "-w", "start"]))  # fmt: skip
    return f"postgresql+psycopg://postgres@{HOST}:{port}/postgres", str(pgdata), user


def stop_postgres(pgdata: str, user: str | None) -> None:
    subprocess.run(
        _as_user(user, [_pg_bin("pg_ctl"), "-D", pgdata, "-m", "fast", "-w", "stop"]),
        capture_output=True, check=False,
    )  # fmt: skip


# -- up / down / status -------------------------------------------------------------------


def up(
    *,
    workers: int = 2,
    gpu_workers: int = 0,
    cpus_per_worker: int = 2,
    db_url: str | None = None,
    dashboard: bool = True,
    directory: Path | None = None,
) -> ClusterState:
    """Start PostgreSQL (unless `db_url`), a Ray head with no work on it, `workers` CPU
    workers and `gpu_workers` GPU workers (simulated with `--num-gpus` where this machine
    has no GPU), and the tunelab dashboard when it is installed."""
    if cpus_per_worker < 2:
        raise ClusterError("a worker needs at least 2 CPUs: one measures while others build")
    if workers + gpu_workers < 1:
        raise ClusterError("a cluster needs at least one worker")
    directory = directory or state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    existing = load_state(directory)
    if existing and any(_alive(p) for p in existing.procs):
        raise ClusterAlreadyUp(f"a cluster from {directory} is already up: `tunelab cluster down`")
    for stale in directory.glob("*.log"):
        stale.unlink()

    token_path = _token(directory)
    temp_dir = _temp_dir(directory)
    port, dash_port = free_port(), free_port()
    state = ClusterState(
        ray_address=f"{HOST}:{port}",
        dashboard_url=f"http://{HOST}:{dash_port}",
        db_url="",
        token_path=str(token_path),
        temp_dir=temp_dir,
    )
    try:
        if db_url:
            state.db_url = db_url
        else:
            state.db_url, state.postgres_dir, state.postgres_user = start_postgres(directory)
        _save(state, directory)
        from tunelab.schema.db import get_engine

        get_engine(state.db_url)  # reachable, and migrated before any job starts

        env = {**os.environ, **state.env()}
        env.pop("RAY_ADDRESS")  # `ray start` takes the address as an argument
        # Job entrypoints (`tunelab run-spec`) run under the nodes' PATH: this tunelab first.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        ray = _ray_bin()
        # Ray maps loopback to this machine's own address; nothing leaves the machine.
        common = ["--block", "--temp-dir", temp_dir, "--disable-usage-stats"]
        own_ports = _own_ports

        head = [ray, "start", "--head", "--port", str(port), "--num-cpus", "0",
                "--num-gpus", "0", "--include-dashboard", "true", "--dashboard-host", HOST,
                "--dashboard-port", str(dash_port), *common, *own_ports()]  # fmt: skip
        state.procs.append(_spawn("ray-head", head, env, directory))
        _save(state, directory)
        _wait_nodes(state, 1)
        state.simulated_gpus = gpu_workers > 0 and not has_gpu()
        for i in range(workers + gpu_workers):
            gpu = i >= workers
            cmd = [ray, "start", "--address", state.ray_address,
                   "--num-cpus", str(cpus_per_worker), *common, *own_ports()]  # fmt: skip
            if gpu:
                cmd += ["--num-gpus", "1"]
                if state.simulated_gpus:
                    cmd += ["--resources", json.dumps({"simulated_gpu": 1})]
            else:
                cmd += ["--resources", json.dumps({MEASURE_RESOURCE: 1})]
            role = f"ray-{'gpu' if gpu else 'cpu'}-worker-{i}"
            state.procs.append(_spawn(role, cmd, env, directory))
            _save(state, directory)
            # One at a time: several raylets starting together can starve a small machine.
            _wait_nodes(state, 2 + i)
        if dashboard and _dashboard_available():
            dport = free_port()
            cmd = [sys.executable, "-m", "tunelab.platform.cli", "dashboard", "--db",
                   state.db_url, "--port", str(dport)]  # fmt: skip
            state.procs.append(_spawn("dashboard", cmd, env, directory))
            state.tunelab_dashboard_url = f"http://{HOST}:{dport}"
        _save(state, directory)
    except BaseException:
        down(directory)
        raise
    return state


def _dashboard_available() -> bool:
    import importlib.util

    return (
        importlib.util.find_spec("streamlit") is not None
        and (Path(__file__).parent.parent / "dashboard" / "app.py").exists()
    )


def _tree(p: Proc) -> list[psutil.Process]:
    root = _alive(p)
    if root is None:
        return []
    with contextlib.suppress(psutil.Error):
        return [root, *root.children(recursive=True)]
    return [root]


def down(directory: Path | None = None, timeout_s: float = 20) -> list[str]:
    """Stop every process `up` started, and PostgreSQL if it started one. Returns the roles
    that were still running."""
    directory = directory or state_dir()
    state = load_state(directory)
    if state is None:
        return []
    stopped: list[str] = []
    victims: list[psutil.Process] = []
    for p in reversed(state.procs):  # workers and dashboard first, the head last
        tree = [proc for proc in _tree(p) if proc.pid != os.getpid()]  # a reaper stopping it
        if tree:
            stopped.append(p.role)
            victims += tree
    # Ray's processes that outlived their parent (a failed start leaves some, e.g. the
    # dashboard agent): every process of this user naming the cluster's own temp dir.
    seen = {proc.pid for proc in victims}
    victims += [proc for proc in _of_temp_dir(state.temp_dir) if proc.pid not in seen]
    for proc in victims:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, remaining = psutil.wait_procs(victims, timeout=timeout_s)
    for proc in remaining:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(remaining, timeout=5)
    if state.postgres_dir:
        stop_postgres(state.postgres_dir, state.postgres_user)
        stopped.append("postgres")
        shutil.rmtree(state.postgres_dir, ignore_errors=True)
    logs = Path(state.temp_dir) / "session_latest" / "logs"
    if logs.is_dir():  # keep Ray's own logs for a post-mortem; the rest of its temp dir goes
        shutil.rmtree(directory / "ray-logs", ignore_errors=True)
        shutil.copytree(logs, directory / "ray-logs", ignore_dangling_symlinks=True,
                        dirs_exist_ok=True)  # fmt: skip
    shutil.rmtree(state.temp_dir, ignore_errors=True)
    _state_file(directory).unlink()
    return stopped


def _of_temp_dir(temp_dir: str) -> list[psutil.Process]:
    """This user's processes whose command line names `temp_dir` (never this one)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "uids"]):
        with contextlib.suppress(psutil.Error, TypeError):
            if proc.pid == os.getpid() or proc.info["uids"].real != os.getuid():
                continue
            if any(temp_dir in part for part in proc.info["cmdline"] or []):
                found.append(proc)
    return found


def status(directory: Path | None = None) -> dict[str, Any] | None:
    """Each started process and whether it still runs, plus the addresses to use."""
    state = load_state(directory)
    if state is None:
        return None
    return {
        "idle_s": state.idle_s,
        "drivers": len(_drivers(directory or state_dir())),
        "ray_address": state.ray_address,
        "ray_dashboard": state.dashboard_url,
        "tunelab_dashboard": state.tunelab_dashboard_url,
        "db_url": state.db_url,
        "simulated_gpus": state.simulated_gpus,
        "processes": [
            {"role": p.role, "pid": p.pid, "running": _alive(p) is not None, "log": p.log}
            for p in state.procs
        ]
        + (
            [
                {
                    "role": "postgres",
                    "pid": None,
                    "running": _postgres_running(state),
                    "log": state.postgres_dir,
                }
            ]
            if state.postgres_dir
            else []
        ),
    }


def head_alive(state: ClusterState) -> bool:
    """Whether the cluster's Ray head process still runs."""
    return any(p.role == "ray-head" and _alive(p) is not None for p in state.procs)


def _postgres_running(state: ClusterState) -> bool:
    assert state.postgres_dir is not None
    cmd = _as_user(state.postgres_user, [_pg_bin("pg_ctl"), "-D", state.postgres_dir, "status"])
    return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


# -- the warm local Ray -------------------------------------------------------------------


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold the state directory's lock: one start (or stop) at a time, across processes."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _drivers_dir(directory: Path) -> Path:
    return directory / "drivers"


def register_driver(directory: Path | None = None, pid: int | None = None) -> None:
    """Note that process `pid` (this one) uses the cluster: the reaper waits for it."""
    folder = _drivers_dir(directory or state_dir())
    folder.mkdir(parents=True, exist_ok=True)
    pid = pid or os.getpid()
    (folder / str(pid)).write_text(repr(psutil.Process(pid).create_time()))
    (folder.parent / "used").touch()


def _drivers(directory: Path) -> list[int]:
    """The registered drivers still alive (the notes of dead ones are removed)."""
    folder = _drivers_dir(directory)
    alive = []
    for note in folder.glob("*") if folder.is_dir() else []:
        with contextlib.suppress(ValueError, OSError):
            pid = int(note.name)
            started = float(note.read_text())
            try:
                if abs(psutil.Process(pid).create_time() - started) < 1e-3:
                    alive.append(pid)
                    continue
            except psutil.Error:
                pass
            note.unlink()
    return alive


def _used_at(directory: Path) -> float:
    with contextlib.suppress(OSError):
        return (directory / "used").stat().st_mtime
    return 0.0


def join_or_start(directory: Path | None = None) -> ClusterState:
    """The Ray of this data directory (a `cluster up` one, or the warm local one), started
    when none runs; this process is registered as one of its drivers. Raises ClusterError
    when it would not start in TUNELAB_RAY_START_ATTEMPTS tries (nothing is left running)."""
    directory = directory or state_dir()
    timeout_s = _env_float(ENV_START_TIMEOUT_S, DEFAULT_START_TIMEOUT_S)
    attempts = max(1, int(_env_float(ENV_START_ATTEMPTS, DEFAULT_START_ATTEMPTS)))
    idle_s = max(0.0, _env_float(ENV_IDLE_S, DEFAULT_IDLE_S))
    with _locked(directory):
        state = load_state(directory)
        if state is not None and head_alive(state):
            register_driver(directory)
            return state
        if state is not None:
            down(directory)  # what is left of a cluster whose head died
        why = ""
        for attempt in range(1, attempts + 1):
            try:
                state = _start_warm(directory, timeout_s, idle_s)
            except ClusterError as exc:
                why = str(exc)
                log.info("local Ray start %d/%d failed: %s", attempt, attempts, why)
                continue
            register_driver(directory)
            return state
    raise ClusterError(
        f"Ray did not start on this machine in {attempts} tries ({why}); if the machine "
        f"is busy, try again or raise {ENV_START_TIMEOUT_S} (now {timeout_s:g}); Ray's "
        f"logs: {directory / 'ray-logs'}"
    )


def _started(proc: Proc, timeout_s: float) -> None:
    """Wait until `ray start --block` says its node runs; ClusterError if it exits first or
    the deadline passes."""
    log_path = Path(proc.log)
    deadline = time.monotonic() + timeout_s
    while True:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        if "Ray runtime started" in text:
            return
        if _alive(proc) is None:
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            said = next((ln for ln in reversed(lines) if "rror" in ln or "xception" in ln),
                        lines[-1] if lines else "no output")  # fmt: skip
            raise ClusterError(f"`ray start` exited: {said[:300]}")
        if time.monotonic() > deadline:
            raise ClusterError(f"the Ray head did not start in {timeout_s:g} s")
        time.sleep(0.2)


def _cpus() -> int:
    raw = os.environ.get(ENV_CPUS)
    if raw:
        return max(1, int(_env_float(ENV_CPUS, 1)))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _start_warm(directory: Path, timeout_s: float, idle_s: float) -> ClusterState:
    """One try at starting the warm local Ray and its reaper; on failure nothing is left."""
    for stale in directory.glob("*.log"):
        stale.unlink()
    port = free_port()
    state = ClusterState(
        ray_address=f"{HOST}:{port}", dashboard_url="", db_url="",
        token_path=str(_token(directory)), temp_dir=_temp_dir(directory), idle_s=idle_s,
    )  # fmt: skip
    env = {**os.environ, **state.env()}
    env.pop("RAY_ADDRESS")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # The raylet's wait for its agents' ports, sized for a loaded machine.
    env.setdefault("RAY_agent_register_timeout_ms", str(int(timeout_s * 1000)))
    cmd = [_ray_bin(), "start", "--head", "--port", str(port), "--num-cpus", str(_cpus()),
           "--include-dashboard", "false", "--dashboard-port", str(free_port()),
           "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
           "--ray-client-server-port", str(free_port()),
           "--resources", json.dumps({MEASURE_RESOURCE: 1}), "--block", "--temp-dir",
           state.temp_dir, "--disable-usage-stats", *_own_ports()]  # fmt: skip
    try:
        state.procs.append(_spawn("ray-head", cmd, env, directory))
        _save(state, directory)
        _started(state.procs[-1], timeout_s)
        reaper = [sys.executable, "-m", "tunelab.platform.cluster", "reap", str(directory)]
        state.procs.append(_spawn("reaper", reaper, env, directory))
        _save(state, directory)
    except BaseException:
        down(directory)
        raise
    log.info("started a local Ray at %s (stops after %g s unused)", state.ray_address, idle_s)
    return state


def stop(directory: Path | None = None) -> list[str]:
    """`down`, under the lock that starts take: never half-way through a start."""
    directory = directory or state_dir()
    with _locked(directory):
        return down(directory)


def reap(directory: Path) -> None:
    """The warm cluster's reaper: stop it once no registered driver has run for its idle
    time; leave when the cluster is gone."""
    last = time.time()
    while True:
        state = load_state(directory)
        if state is None or state.idle_s is None:
            return
        time.sleep(min(2.0, max(0.5, state.idle_s / 4)))
        if not head_alive(state):
            with _locked(directory):
                down(directory)  # the head died: stop what is left of it
            return
        if _drivers(directory):
            last = time.time()
            continue
        if time.time() - max(last, _used_at(directory)) < state.idle_s:
            continue
        with _locked(directory):  # a driver registering now does so before or after this
            if _drivers(directory) or time.time() - max(last, _used_at(directory)) < state.idle_s:
                continue
            log.info("no driver for %g s: stopping the local Ray", state.idle_s)
            down(directory)
        return


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "reap":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s reaper %(message)s")
        # A driver's Ctrl-C reaches its process group, never this session of its own.
        reap(Path(sys.argv[2]))
    else:
        sys.exit("usage: python -m tunelab.platform.cluster reap DIRECTORY")
