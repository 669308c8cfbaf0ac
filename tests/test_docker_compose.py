"""docker-compose.yml and docker/Dockerfile, checked without a Docker engine.

The files are parsed, not run: each check ties a value of theirs to the
project's own source of truth — the CLI's parsers and defaults, the training
config's validator, the local broker's and cluster's settings, the pins of
pyproject.toml and jvm/pom.xml — so that changing either side alone fails here.
"""

from __future__ import annotations

import doctest
import importlib.util
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.flink_cluster import FlinkCluster
from connectors.kafka_broker import DEFAULT_PORT, LocalBroker
from streamlearn.cli import build_parser
from streamlearn.training.cli_args import config_from_args
from streamlearn.training.config import SCHEMA, TrainConfig

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
FLINK_CONF = ROOT / "docker" / "flink" / "config.yaml"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
APP_SERVICES = ("topics", "jobmanager", "taskmanager", "trainer", "server")

# -- reading the files ----------------------------------------------------------------------

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def interpolate(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` with no variable set: what a plain ``up`` runs."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: m.group("default") or "", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(raw: dict) -> dict[str, dict]:
    return interpolate(raw["services"])


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def pom() -> dict[str, str]:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    props = ET.parse(ROOT / "jvm" / "pom.xml").getroot().find("m:properties", ns)
    return {child.tag.split("}")[1]: (child.text or "").strip() for child in props}


@pytest.fixture(scope="module")
def flink_conf() -> dict:
    return yaml.safe_load(FLINK_CONF.read_text())


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [a for k, a in self.instructions if k == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages of a Dockerfile: continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), " ".join(args.split())
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
            stages.append(Stage(parts[0], name))
        elif stages:
            stages[-1].instructions.append((keyword, args))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    parsed = parse_dockerfile(DOCKERFILE.read_text())
    return {s.name: s for s in parsed}


def named_volume_mounts(service: dict, volumes: dict) -> dict[str, str]:
    """container path -> named volume, for a service's volumes of the short syntax."""
    out = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if source in volumes:
            out[target] = source
    return out


def bind_mounts(service: dict) -> dict[str, Path]:
    """container path -> host path, for a service's bind mounts (relative to the compose file)."""
    out = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if source.startswith((".", "/")):
            out[target] = (COMPOSE.parent / source).resolve()
    return out


def published(service: dict) -> dict[int, tuple[str, int]]:
    """container port -> (host address, host port), from ``HOST_IP:HOST:CONTAINER`` mappings."""
    out = {}
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        assert len(parts) == 3, f"{spec!r}: publish on an explicit address, HOST_IP:HOST:CONTAINER"
        out[int(parts[2])] = (parts[0], int(parts[1]))
    return out


def cli(command: list[str]) -> Any:
    """Parse a container command with the real `streamlearn` parser (unknown flags fail)."""
    assert command[0] == "streamlearn", command
    return build_parser().parse_args(command[1:])


@pytest.fixture(scope="module")
def trainer_args(services: dict) -> Any:
    command = services["trainer"]["command"]
    assert command[0] == "submit-train", "the trainer goes through docker/submit_train.py"
    return build_parser().parse_args(["train", *command[1:]])


@pytest.fixture(scope="module")
def train_cfg(services: dict, trainer_args: Any) -> TrainConfig:
    """The trainer's config as the job validates it, with the bind-mounted TOML read from here."""
    mounts = bind_mounts(services["trainer"])
    assert trainer_args.config in mounts, "the --config file is bind-mounted from the repository"
    trainer_args.config = str(mounts[trainer_args.config])
    return config_from_args(trainer_args)


def defaults(function: Any) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(function).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


# -- services and wiring ----------------------------------------------------------------------


def test_the_services(raw: dict, services: dict) -> None:
    assert set(services) == {"kafka", *APP_SERVICES, "s3"}
    assert set(raw["volumes"]) == {"kafka-data", "checkpoints", "models"}
    for name in services:
        for dep in services[name].get("depends_on", {}):
            assert dep in services, f"{name} depends on an unknown service {dep}"


def test_app_services_share_one_image_at_the_project_version(
    services: dict, pyproject: dict, stages: dict[str, Stage]
) -> None:
    image = f"streamlearn:{pyproject['project']['version']}"
    for name in APP_SERVICES:
        svc = services[name]
        assert svc["image"] == image, name
        assert svc["build"] == {"context": ".", "dockerfile": "docker/Dockerfile", "target": "app"}
    assert "app" in stages
    assert list(stages)[-1] == "app", "a plain `docker build` must give the app image"


def test_start_order(services: dict) -> None:
    def needs(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}

    assert needs("topics") == {"kafka": "service_healthy"}
    trainer = needs("trainer")
    assert trainer["kafka"] == "service_healthy"
    assert trainer["topics"] == "service_completed_successfully"
    assert trainer["jobmanager"] == "service_healthy"
    # the jobmanager is healthy once a taskmanager registered: the taskmanager must not wait
    assert needs("taskmanager")["jobmanager"] == "service_started"
    for name, svc in services.items():
        for dep, spec in svc.get("depends_on", {}).items():
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits on {dep}'s health, undefined"
            # a service in a profile is off by default: a dependency on it must be optional
            if services[dep].get("profiles"):
                assert spec.get("required") is False, f"{name} -> {dep}"
    assert "8081/overview" in " ".join(services["jobmanager"]["healthcheck"]["test"])


def test_every_variable_has_a_default(raw: dict) -> None:
    text = COMPOSE.read_text()
    used = list(_VAR.finditer(text))
    assert used, "STREAMLEARN_STORE switches the store"
    for match in used:
        assert match.group("default") is not None, (
            f"{match.group(0)} has no default: a plain `docker compose up` would run without it"
        )


# -- Kafka --------------------------------------------------------------------------------------


def kafka_listeners(env: dict[str, str], key: str) -> dict[str, tuple[str, int]]:
    out = {}
    for item in env[key].split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def test_kafka_is_the_official_image_at_the_pom_version(services: dict, pom: dict) -> None:
    assert pom["kafka.version"] == "4.2.0"
    assert services["kafka"]["image"] == f"apache/kafka:{pom['kafka.version']}"


def test_kafka_listeners_reach_containers_and_host(
    services: dict, train_cfg: TrainConfig, tmp_path: Path
) -> None:
    kafka = services["kafka"]
    env = kafka["environment"]
    listeners = kafka_listeners(env, "KAFKA_LISTENERS")
    advertised = kafka_listeners(env, "KAFKA_ADVERTISED_LISTENERS")
    local = LocalBroker(port=DEFAULT_PORT, directory=tmp_path)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    # inside the network: kafka:9092, what every container's bootstrap says
    assert listeners["PLAINTEXT"][1] == DEFAULT_PORT == 9092
    assert advertised["PLAINTEXT"] == (kafka["hostname"], DEFAULT_PORT) == ("kafka", 9092)
    assert train_cfg.kafka.bootstrap == "kafka:9092"
    # from the host: the project's default bootstrap, on the published port
    host_default = SCHEMA["kafka"]["bootstrap"][2]
    assert f"{advertised['HOST'][0]}:{advertised['HOST'][1]}" == host_default == "127.0.0.1:9092"
    assert published(kafka) == {listeners["HOST"][1]: ("127.0.0.1", 9092)}
    # controller as locally: port + 1, named in the quorum
    assert listeners["CONTROLLER"][1] == local.controller_port == 9093
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"1@kafka:{local.controller_port}"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "PLAINTEXT"
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols) == set(listeners) and set(protocols.values()) == {"PLAINTEXT"}
    assert set(advertised) <= set(listeners) and "CONTROLLER" not in advertised


def test_kafka_settings_equal_the_local_brokers(services: dict, tmp_path: Path) -> None:
    broker = LocalBroker(port=DEFAULT_PORT, directory=tmp_path)
    local = dict(
        line.split("=", 1) for line in broker._write_config().read_text().splitlines() if line
    )
    env = services["kafka"]["environment"]
    compose = {
        k.removeprefix("KAFKA_").lower().replace("_", "."): str(v)
        for k, v in env.items()
        if k.startswith("KAFKA_") and k != "KAFKA_HEAP_OPTS"
    }
    addresses = {"listeners", "advertised.listeners", "controller.quorum.voters", "log.dirs"}
    addresses |= {"listener.security.protocol.map"}  # compose adds the HOST listener
    for key, value in local.items():
        if key not in addresses:
            assert compose.get(key) == value, f"{key}: locally {value!r}"
    assert compose["log.dirs"] in named_volume_mounts(services["kafka"], {"kafka-data": None})
    assert env["KAFKA_HEAP_OPTS"] == f"-Xmx{broker.heap} -Xms{broker.heap}"
    # KRaft formats storage with CLUSTER_ID: a base64 UUID (16 bytes, 22 characters)
    import base64

    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in services["kafka"]["healthcheck"]["test"]


def test_topics_are_created_where_the_job_reads(services: dict, train_cfg: TrainConfig) -> None:
    args = cli(services["topics"]["command"])
    assert (args.command, args.action) == ("topics", "create")
    assert args.topic == train_cfg.kafka.topic
    assert args.bootstrap == train_cfg.kafka.bootstrap
    assert not args.only, "the job also writes <topic>.dlq and <topic>.models"


# -- Flink --------------------------------------------------------------------------------------


def test_flink_cluster_addresses_and_ports(
    services: dict, flink_conf: dict, trainer_args: Any
) -> None:
    local = defaults(FlinkCluster)
    jm, tm, rest = flink_conf["jobmanager"], flink_conf["taskmanager"], flink_conf["rest"]
    assert rest["port"] == local["rest_port"] == 8081
    assert jm["rpc"]["port"] == local["rpc_port"] == 6123
    assert jm["rpc"]["address"] == rest["address"] == services["jobmanager"]["hostname"]
    assert services["jobmanager"]["hostname"] == "jobmanager"
    assert jm["bind-host"] == tm["bind-host"] == rest["bind-address"] == "0.0.0.0"
    assert "host" not in tm, "each taskmanager registers with the address the jobmanager sees"
    assert published(services["jobmanager"]) == {8081: ("127.0.0.1", local["rest_port"])}
    assert trainer_args.cluster == f"{rest['address']}:{rest['port']}"
    assert trainer_args.detached, "the one-shot trainer exits once the job is submitted"
    assert tm["numberOfTaskSlots"] == local["slots"]
    assert jm["memory"]["process"]["size"] == local["jobmanager_memory"]
    assert tm["memory"]["process"]["size"] == local["taskmanager_memory"]


def test_flink_roles_run_pyflinks_own_scripts(services: dict) -> None:
    script = ENTRYPOINT.read_text()
    roles = set(re.findall(r"^\s*([a-z|-]+)\)\s*$", script, flags=re.M))
    roles = {r for group in roles for r in group.split("|")}
    assert {"jobmanager", "taskmanager", "submit-train"} <= roles
    assert 'bin/$role.sh" start-foreground' in script
    assert services["jobmanager"]["command"] == ["jobmanager"]
    assert services["taskmanager"]["command"] == ["taskmanager"]
    assert "docker/submit_train.py" in script


def run_entrypoint(args: list[str], flink_home: Path) -> subprocess.CompletedProcess:
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "FLINK_HOME": str(flink_home),
        "STREAMLEARN_HOME": str(ROOT),
    }
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_entrypoint_dispatches_each_role(tmp_path: Path) -> None:
    """Run the real entrypoint, with a Flink home whose scripts print what they are given."""
    (tmp_path / "bin").mkdir()
    for role in ("jobmanager", "taskmanager"):
        (tmp_path / "bin" / f"{role}.sh").write_text(f'echo "{role}: $*"\n')
    tm = run_entrypoint(["taskmanager", "-D", "taskmanager.numberOfTaskSlots=4"], tmp_path)
    assert tm.stdout == "taskmanager: start-foreground -D taskmanager.numberOfTaskSlots=4\n"
    assert run_entrypoint(["jobmanager"], tmp_path).stdout == "jobmanager: start-foreground\n"
    assert run_entrypoint(["echo", "any", "command"], tmp_path).stdout == "any command\n"
    # submit-train hands its arguments to `streamlearn train`'s own parser
    submit = run_entrypoint(["submit-train", "--help"], tmp_path)
    assert submit.returncode == 0, submit.stderr
    assert "--cluster HOST:PORT" in submit.stdout
    bad = run_entrypoint(["submit-train", "--cluster", "jobmanager:8081", "--no-such"], tmp_path)
    assert bad.returncode == 2 and "--no-such" in bad.stderr


def test_workers_run_the_images_python(flink_conf: dict, stages: dict[str, Stage]) -> None:
    python = flink_conf["python"]
    # the official python images put their interpreter (and pip's packages) under /usr/local
    assert stages["app"].base.startswith("python:")
    assert python["executable"] == python["client"]["executable"] == "/usr/local/bin/python"


def test_flink_java_options_are_the_distributions(flink_conf: dict) -> None:
    spec = importlib.util.find_spec("pyflink")
    assert spec is not None and spec.submodule_search_locations
    home = Path(next(iter(spec.submodule_search_locations)))
    shipped = yaml.safe_load((home / "conf" / "config.yaml").read_text())
    assert flink_conf["env"]["java"]["opts"]["all"] == shipped["env"]["java"]["opts"]["all"]


def test_checkpoints_are_shared_at_the_jobs_path(
    raw: dict, services: dict, train_cfg: TrainConfig
) -> None:
    path = train_cfg.job.checkpoint_dir
    for name in ("jobmanager", "taskmanager", "trainer"):
        mounts = named_volume_mounts(services[name], raw["volumes"])
        assert mounts.get(path) == "checkpoints", f"{name} must mount the checkpoints at {path}"


# -- the model store: job and server ------------------------------------------------------------


def test_store_volume_is_shared_by_job_and_server(
    raw: dict, services: dict, train_cfg: TrainConfig
) -> None:
    store = train_cfg.store.uri
    assert store == "/var/lib/streamlearn/models"
    for name in ("taskmanager", "trainer", "server"):
        mounts = named_volume_mounts(services[name], raw["volumes"])
        assert mounts.get(store) == "models", f"{name} must mount the store at {store}"
    assert "models" not in named_volume_mounts(services["jobmanager"], raw["volumes"]).values()


def test_server_serves_the_trained_model_on_the_default_port(
    services: dict, train_cfg: TrainConfig
) -> None:
    server = services["server"]
    args = cli(server["command"])
    local_port = build_parser().parse_args(["serve", "--store", "s", "--model", "m"]).port
    assert args.command == "serve"
    assert args.port == local_port == 8000
    assert args.host == "0.0.0.0", "the default 127.0.0.1 refuses connections from outside"
    assert args.store == train_cfg.store.uri
    assert args.model == train_cfg.store.model
    assert published(server) == {args.port: ("127.0.0.1", local_port)}
    assert f"localhost:{args.port}/healthz" in " ".join(server["healthcheck"]["test"])


def test_train_config_changes_only_what_containers_need(train_cfg: TrainConfig) -> None:
    local = TrainConfig.from_dict({})
    changed = {
        f"{section}.{key}"
        for section, values in train_cfg.to_dict().items()
        for key, value in values.items()
        if local.to_dict()[section][key] != value
    }
    assert changed == {"kafka.bootstrap", "job.checkpoint_dir", "store.uri"}


def test_submitter_skips_a_model_whose_job_runs() -> None:
    path = ROOT / "docker" / "submit_train.py"
    spec = importlib.util.spec_from_file_location("submit_train", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert doctest.testmod(module).failed == 0
    # the name it looks for is the one the job gives itself
    assert 'execute(f"streamlearn-train-{cfg.store.model}")' in (
        ROOT / "flink_jobs" / "train.py"
    ).read_text()
    jobs = {
        "jobs": [
            {"jid": "old", "name": "streamlearn-train-default", "state": "CANCELED"},
            {"jid": "other", "name": "streamlearn-train-ctr", "state": "RUNNING"},
        ]
    }
    assert module.live_training_job(jobs, "default") is None
    jobs["jobs"].append({"jid": "live", "name": "streamlearn-train-default", "state": "RESTARTING"})
    assert module.live_training_job(jobs, "default") == "live"


# -- the optional S3-compatible store -------------------------------------------------------------


def test_s3_is_optional_and_moto(services: dict, stages: dict[str, Stage]) -> None:
    s3 = services["s3"]
    assert s3["profiles"] == ["s3"]
    assert s3["build"]["target"] == "s3"
    assert [json.loads(a) for a in stages["s3"].args("ENTRYPOINT")] == [["moto_server"]]
    cmd = json.loads(stages["s3"].args("CMD")[0])
    port = int(cmd[cmd.index("--port") + 1])
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert published(s3) == {port: ("127.0.0.1", port)}


# -- versions: the project's pins, nothing else -------------------------------------------------


def pins(pyproject: dict) -> dict[str, str]:
    project = pyproject["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    out = {}
    for spec in specs:
        name, _, version = spec.partition("==")
        out[re.sub(r"\[.*\]", "", name).lower()] = version
    return out


def pip_installs(stage: Stage) -> list[list[str]]:
    out = []
    for run in stage.args("RUN"):
        for part in run.split("&&"):
            if "pip" not in part:
                continue
            words = shlex.split(part)
            words = [w for w in words if not w.startswith("--mount")]
            if "pip" in words and "install" in words:
                out.append(words[words.index("install") + 1 :])
    return out


def test_python_packages_are_the_pyproject_pins(stages: dict[str, Stage], pyproject: dict) -> None:
    pinned = pins(pyproject)
    assert pinned["apache-flink"] == "2.2.1"
    app = stages["app"]
    assert pip_installs(app) == [["."]], "the app installs the project, so pip reads its pins"
    copied = " ".join(app.args("COPY"))
    assert "pyproject.toml" in copied
    for package in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert f" {package.rstrip('*')} " in f" {copied} ", f"{package} must be in the image"
    seen = 0
    for stage in stages.values():
        for words in pip_installs(stage):
            for spec in words:
                if "==" in spec:
                    name, _, version = spec.partition("==")
                    name = re.sub(r"\[.*\]", "", name).lower()
                    assert pinned.get(name) == version, f"{spec}: pyproject pins {pinned.get(name)}"
                    seen += 1
    assert seen == 1  # moto[server], for the s3 stage
    assert pip_installs(stages["s3"]) == [[f"moto[server]=={pinned['moto']}"]]


def test_python_and_jdk_versions(stages: dict[str, Stage], pyproject: dict) -> None:
    minimum = pyproject["project"]["requires-python"].removeprefix(">=")
    for name in ("app", "s3"):
        assert re.fullmatch(rf"python:{re.escape(minimum)}-slim-bookworm", stages[name].base), name
    assert re.fullmatch(r"eclipse-temurin:17-jdk", stages["jdk"].base)
    assert re.fullmatch(r"maven:3\.9-eclipse-temurin-17", stages["jars"].base)
    assert "/opt/java/openjdk" in " ".join(stages["app"].args("ENV"))


def test_jars_come_from_the_pom(stages: dict[str, Stage], pom: dict) -> None:
    jars = stages["jars"]
    assert any(
        "mvn" in run and "-f jvm/pom.xml package" in run for run in jars.args("RUN")
    ), "Maven reads the versions in jvm/pom.xml"
    app = stages["app"]
    assert "--from=jars /src/jvm/lib jvm/lib" in app.args("COPY")
    assert "python -m connectors.paths" in app.args("RUN"), "builds the helper jar"
    env = " ".join(app.args("ENV"))
    assert "STREAMLEARN_HOME=/opt/streamlearn" in env
    assert ("WORKDIR", "/opt/streamlearn") in app.instructions
    # no version of a jar is written anywhere but the pom
    connector = pom["flink.kafka.connector.version"]
    assert connector == "5.0.0-2.2"
    for path in [COMPOSE, ROOT / "docs" / "docker.md", *sorted((ROOT / "docker").rglob("*"))]:
        if path.is_file():
            text = path.read_text()
            for found in re.findall(r"flink-sql-connector-kafka[-:]([0-9][\w.-]*)", text):
                assert found == connector, f"{path.name} names connector {found}"
