"""A Docker engine for the compose stack's end-to-end test: the one that answers (the
user's: DOCKER_HOST, else the default socket), or, where none does, a dockerd this module
starts as root with its own data root, exec root, pid file and socket, stopped afterwards.

The daemon it starts keeps to itself: no docker0 bridge, no iptables rules, no IP
forwarding or masquerading (so its containers reach each other and, through published
ports, the host's loopback, and nothing beyond), and its data root lives in the test's
cache directory, so its images are kept for the next run and a user's containers, images
and volumes are never seen.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DOCKER_TIMEOUT_S = 15  # `docker version` against a daemon that does not answer


@dataclass
class Engine:
    """A Docker engine to talk to: `env` holds its DOCKER_HOST; `own` when started here."""

    env: dict[str, str]
    own: bool
    proc: subprocess.Popen | None = None
    log: Path | None = None
    data_root: Path | None = None
    notes: list[str] = field(default_factory=list)

    def docker(self, *args: str, timeout: float = 120, check: bool = True,
               input: str | None = None) -> subprocess.CompletedProcess:  # fmt: skip
        """Run the docker CLI against this engine (bounded by `timeout`)."""
        proc = subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout,
            input=input,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {proc.stderr[-2000:]}")
        return proc


def answers(env: dict[str, str]) -> bool:
    """Whether the daemon `env` points at answers `docker version`."""
    try:
        proc = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            env=env, capture_output=True, text=True, timeout=DOCKER_TIMEOUT_S,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())


def _run_dir() -> Path:
    """Where the sockets and the exec root go: short paths (unix sockets are limited)."""
    base = Path("/run") if Path("/run").is_dir() and os.access("/run", os.W_OK) else Path("/tmp")
    return base / "tunelab-compose-test"


def _stop_stale(pidfile: Path, data_root: Path) -> None:
    """A dockerd left by an earlier run on this data root (its pid file says which): stop it."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return
    if "dockerd" in cmdline and str(data_root) in cmdline:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def connect(cache: Path, start_timeout_s: float = 90) -> Engine | str:
    """An engine to use, or why none can run here."""
    if not shutil.which("docker"):
        return "no docker CLI on PATH (apt-get install docker.io; make test does, as root)"
    env = dict(os.environ)
    if answers(env):
        where = env.get("DOCKER_HOST", "the default socket")
        return Engine(env=env, own=False, notes=[f"using the Docker engine at {where}"])
    if "DOCKER_HOST" in os.environ:
        return f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer"
    if not shutil.which("dockerd"):
        return "no Docker engine answers and dockerd is not installed (apt-get install docker.io)"
    if os.geteuid() != 0:
        return "no Docker engine answers and starting one needs root"
    run = _run_dir()
    run.mkdir(parents=True, exist_ok=True)
    data_root = cache / "docker"
    data_root.mkdir(parents=True, exist_ok=True)
    pidfile, sock = run / "dockerd.pid", run / "docker.sock"
    _stop_stale(pidfile, data_root)
    log = cache / "dockerd.log"
    cmd = ["dockerd", "--data-root", str(data_root), "--exec-root", str(run / "exec"),
           "--pidfile", str(pidfile), "--host", f"unix://{sock}", "--iptables=false",
           "--ip-forward=false", "--ip-masq=false", "--bridge=none"]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    env["DOCKER_HOST"] = f"unix://{sock}"
    engine = Engine(env=env, own=True, proc=proc, log=log, data_root=data_root,
                    notes=[f"started dockerd (data root {data_root})"])  # fmt: skip
    deadline = time.monotonic() + start_timeout_s
    while not answers(env):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(engine)
            tail = log.read_text()[-1500:]
            return f"dockerd did not start within {start_timeout_s:.0f} s:\n{tail}"
        time.sleep(0.5)
    return engine


def stop(engine: Engine, timeout_s: float = 60) -> None:
    """Stop the dockerd this module started (and its containerd); a user's is left alone."""
    proc = engine.proc
    if not engine.own or proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
