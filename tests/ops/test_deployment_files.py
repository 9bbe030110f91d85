"""The deployment files: compose services, health checks, dependencies and variables; the Dockerfile; CI."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.support.processes import ROOT, run

EXAMPLE_HOSTS = {"upper": "upper.local", "reverse": "reverse.local", "space-counter": "space-counter.local",
                 "slow-upper": "slow-upper.local"}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_mongodb_with_auth_a_volume_and_a_health_check(compose):
    mongo = compose["services"]["mongo"]
    assert mongo["image"] == "mongo:7"
    assert {"MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD"} <= set(mongo["environment"])
    volume = mongo["volumes"][0].split(":")
    assert volume[1] == "/data/db" and volume[0] in compose["volumes"]
    assert "ping" in " ".join(mongo["healthcheck"]["test"])


def test_compose_initialises_the_database_before_the_api_and_workers(compose):
    services = compose["services"]
    assert services["init-db"]["command"][:2] == ["machinery", "init-db"]
    assert services["init-db"]["depends_on"]["mongo"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["init-db"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", ["init-db", "api", "worker"])
def test_machinery_reaches_mongodb_with_credentials_and_no_embedded_workers(compose, name):
    env = compose["services"][name]["environment"]
    uri = env["MACHINERY_MONGO_URI"]
    assert uri.startswith("mongodb://${MONGO_USER") and "@mongo:27017/" in uri
    assert uri.endswith("?authSource=admin&replicaSet=rs0")  # the replica set the mongo service runs
    assert env["MACHINERY_EMBEDDED_WORKERS"] == "0"


def test_compose_runs_mongodb_as_a_single_node_replica_set_initiated_by_its_health_check(compose):
    mongo = compose["services"]["mongo"]
    command = mongo["command"]
    # GIVEN the mongo service WHEN it starts THEN mongod is a member of rs0, sharing a key file (auth is on)
    assert command[0] == "mongod" and command[command.index("--replSet") + 1] == "rs0"
    key = command[command.index("--keyFile") + 1]
    assert key.startswith("/data/db/") and key in " ".join(mongo["entrypoint"])
    assert "docker-entrypoint.sh" in " ".join(mongo["entrypoint"])
    # AND its health check pings and initiates rs0 with this one member, under the compose host name
    check = " ".join(mongo["healthcheck"]["test"])
    assert "ping" in check and "rs.initiate" in check and "_id: 'rs0'" in check and "host: 'mongo:27017'" in check
    assert "$$MONGO_INITDB_ROOT_PASSWORD" in check  # read in the container, never written in the file


def test_the_api_serves_under_gunicorn_with_a_readiness_check(compose):
    api = compose["services"]["api"]
    assert api["command"][:2] == ["machinery", "serve"]
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert api["ports"] and api["environment"]["MACHINERY_GUNICORN_WORKERS"]


def test_workers_run_machinery_worker(compose):
    worker = compose["services"]["worker"]
    assert worker["command"][:2] == ["machinery", "worker"]
    assert worker["deploy"]["replicas"] >= 1


@pytest.mark.parametrize("name,host", sorted(EXAMPLE_HOSTS.items()))
def test_example_services_answer_under_their_definition_host_names(compose, name, host):
    service = compose["services"][name]
    assert host in service["networks"]["machinery"]["aliases"]
    command = service["command"]
    assert command[0] == "gunicorn" and "examples/services" in command and "0.0.0.0:5000" in command
    definition = (ROOT / "examples" / "definitions" / f"service-{name}.json").read_text()
    assert f"http://{host}:5000/" in definition


def test_the_dockerfile_caches_dependencies_runs_as_a_user_and_checks_health():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert dockerfile.index("COPY setup.py") < dockerfile.index("COPY machinery")
    assert "\nUSER " in dockerfile and "HEALTHCHECK" in dockerfile and "/healthcheck" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored and ".venv" in ignored


def test_ci_lints_tests_and_runs_the_mongodb_suite_on_a_mongo_service():
    jobs = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())["jobs"]
    steps = {name: " ".join(step.get("run", "") for step in job["steps"]) for name, job in jobs.items()}
    assert "ruff check" in steps["lint"] and "make test" in steps["test"]
    assert jobs["mongo"]["services"]["mongo"]["image"] == "mongo:7"
    assert jobs["mongo"]["env"]["MACHINERY_TEST_MONGO_URI"] == "mongodb://localhost:27017/machinery_test"
    assert "tests/mongo" in steps["mongo"]


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    if shutil.which("docker-compose"):
        return [shutil.which("docker-compose")]
    return None


def test_docker_compose_config_accepts_the_file():
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no docker compose here; the checks above read the file instead")
    result = run([*cli, "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"], env=None, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_mongodb_script_says_what_to_do_without_docker(tmp_path):
    # GIVEN a PATH on which there is no docker at all
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "cat", "seq", "sleep"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    result = run([str(bin_dir / "bash"), str(ROOT / "run-background-service.sh")], env={"PATH": str(bin_dir)})
    # THEN it fails, pointing at the embedded store and at MACHINERY_MONGO_URI
    assert result.returncode != 0
    assert "docker" in result.stderr and "mongomock://" in result.stderr and "MACHINERY_MONGO_URI" in result.stderr
