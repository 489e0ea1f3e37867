"""The docker-compose stack, read as data (there is no Docker engine here): services, health,
start order, and that every variable it uses is documented and read by the code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mammoseg.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, Any] = COMPOSE["services"]
LONG_RUNNING = ("minio", "postgres", "prefect-server", "bridge", "worker")
# ${VAR}, ${VAR:-default}, ${VAR:?msg}; "$${VAR}" is escaped for the container's own shell.
VAR_RE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
SENSITIVE_RE = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY|ACCESS_KEY_ID|CONNECTION_URL")
BRIDGE_ENV = {"MAMMOSEG_BRIDGE_TOKEN", "MAMMOSEG_BRIDGE_HOST", "MAMMOSEG_BRIDGE_PORT", "MAMMOSEG_BRIDGE_DATASET_ROOTS"}


def _env_example() -> dict[str, str]:
    out = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def _environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    assert isinstance(env, dict), f"{service}: use the mapping form of environment"
    return {k: str(v) for k, v in env.items()}


def test_services_and_healthchecks() -> None:
    assert set(LONG_RUNNING) | {"minio-init", "pipeline"} <= set(SERVICES)
    for name in LONG_RUNNING:
        hc = SERVICES[name].get("healthcheck")
        assert hc and hc.get("test"), f"{name} has no healthcheck"
        assert SERVICES[name].get("restart") == "unless-stopped", name
        assert "profiles" not in SERVICES[name], f"{name} must start with `docker compose up`"
    assert SERVICES["minio-init"]["restart"] == "no"
    assert SERVICES["pipeline"]["profiles"] == ["job"]


def test_start_order_uses_conditions() -> None:
    expected = {
        "minio-init": {"minio": "service_healthy", "bridge": "service_healthy"},
        "prefect-server": {"postgres": "service_healthy"},
        "bridge": {"prefect-server": "service_healthy"},
        "worker": {"prefect-server": "service_healthy", "minio-init": "service_completed_successfully"},
        "pipeline": {"minio-init": "service_completed_successfully"},
    }
    for name, deps in expected.items():
        got = {dep: spec["condition"] for dep, spec in SERVICES[name]["depends_on"].items()}
        assert got == deps, name


def test_worker_serves_against_the_server_and_server_uses_postgres() -> None:
    for name in ("worker", "bridge", "prefect-server", "pipeline"):
        assert SERVICES[name]["build"]["dockerfile"] == "infra/Dockerfile", name
    assert SERVICES["worker"]["command"][0] == "serve"
    for name in ("worker", "bridge"):
        assert _environment(name)["PREFECT_API_URL"] == "http://prefect-server:4200/api", name
    db_url = _environment("prefect-server")["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert db_url.startswith("postgresql+asyncpg://") and "@postgres:5432/" in db_url
    assert SERVICES["prefect-server"]["entrypoint"][:3] == ["prefect", "server", "start"]
    assert _environment("worker")["PREFECT_RUNNER_SERVER_ENABLE"] == "true"  # its /health
    # only the UIs are published, and only on the loopback interface
    published = [p for s in SERVICES.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published), published
    assert "ports" not in SERVICES["bridge"]


def test_minio_webhook_to_bridge() -> None:
    init = (REPO / "infra" / "minio" / "init.sh").read_text()
    assert "notify_webhook:mammoseg" in init
    assert 'endpoint="http://bridge:8088/minio/events"' in init
    assert 'auth_token="$MAMMOSEG_BRIDGE_TOKEN"' in init
    assert re.search(r'mc event add local/mammoseg "\$ARN" --event put --prefix raw/', init)
    assert "ARN=arn:minio:sqs::mammoseg:webhook" in init
    assert 'queue_dir="/events"' in init and "minio-events:/events" in SERVICES["minio"]["volumes"]
    assert "MAMMOSEG_BRIDGE_TOKEN" in _environment("minio-init")
    if shutil.which("sh"):
        subprocess.run(["sh", "-n", str(REPO / "infra" / "minio" / "init.sh")], check=True)
    # bridge and worker agree on what the training root is
    assert _environment("bridge")["MAMMOSEG_BRIDGE_DATASET_ROOTS"] == "${MAMMOSEG_RETRAIN_SOURCE_URL:-s3://mammoseg/raw/cbis-ddsm}"
    assert _environment("worker")["MAMMOSEG_RETRAIN_SOURCE_URL"] == "${MAMMOSEG_RETRAIN_SOURCE_URL:-s3://mammoseg/raw/cbis-ddsm}"


def test_every_variable_is_documented_in_env_example() -> None:
    used = set(VAR_RE.findall(COMPOSE_TEXT))
    assert {"MAMMOSEG_BRIDGE_TOKEN", "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"} <= used
    missing = used - set(_env_example())
    assert not missing, f"used in docker-compose.yml but not in .env.example: {sorted(missing)}"
    # $${X} is the container's own variable: it must be set in that container
    for name in re.findall(r"\$\$\{([A-Za-z_][A-Za-z0-9_]*)\}", COMPOSE_TEXT):
        assert name in _environment("postgres"), name


def test_env_names_match_what_the_code_reads() -> None:
    fields = {f"MAMMOSEG_{name.upper()}" for name in Settings.model_fields}
    bridge_src = (REPO / "mammoseg" / "events" / "bridge.py").read_text()
    for name in BRIDGE_ENV:
        assert name in bridge_src, f"the bridge no longer reads {name}"
    names = set(_env_example())
    for service in SERVICES:
        names |= set(_environment(service))
    unknown = {n for n in names if n.startswith("MAMMOSEG_")} - fields - BRIDGE_ENV
    assert not unknown, f"MAMMOSEG_* names no code reads: {sorted(unknown)}"
    for new in ("MAMMOSEG_RETRAIN_CRON", "MAMMOSEG_RETRAIN_SOURCE_URL", "MAMMOSEG_HELDOUT_SOURCE_URL",
                "MAMMOSEG_TRIGGER_THRESHOLD", "MAMMOSEG_TRIGGER_WITHIN_S"):
        assert new in fields and new in names, new
    serve_src = (REPO / "mammoseg" / "serve.py").read_text()
    assert 'os.environ.get("PREFECT_API_URL")' in serve_src


def test_no_secret_is_committed() -> None:
    for service in SERVICES:
        for key, value in _environment(service).items():
            if SENSITIVE_RE.search(key):
                assert "${" in value, f"{service}.{key} holds a literal value; use ${{...}} from .env"
                for var, mod in re.findall(r"\$\{([A-Za-z0-9_]+)(:[-?][^}]*)?\}", value):
                    if SENSITIVE_RE.search(var):  # a secret never gets a default, it must be set
                        assert mod.startswith(":?"), f"{service}.{key}: ${{{var}}} needs :?"
    for key, value in _env_example().items():
        if re.search(r"PASSWORD|SECRET|TOKEN|PSEUDONYM_KEY", key):
            assert value.startswith("change-me"), f".env.example {key} must be a placeholder"
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()


def test_docker_compose_config_is_valid(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], check=False, capture_output=True).returncode != 0:
        pytest.skip("`docker compose` is not available on this machine (no Docker engine / compose plugin)")
    env_file = tmp_path / "test.env"
    env_file.write_text((REPO / ".env.example").read_text())
    subprocess.run([docker, "compose", "--env-file", str(env_file), "-f", str(REPO / "docker-compose.yml"),
                    "config", "-q"], check=True, cwd=REPO)
