"""deploy/k8s checked without a cluster: real schemas, the real kustomize, the project's own rules.

What runs here (docs/deploying.md, "What was validated"):

- ``kubectl kustomize deploy/k8s`` builds the kustomization offline; what it prints is
  what ``kubectl apply -k`` would send.
- Every core resource of that output is validated by ``kubernetes-validate`` against the
  Kubernetes API's own schemas (strict: an unknown field is an error), for each version in
  :data:`KUBERNETES_VERSIONS`.
- The ``FlinkDeployment`` is validated with ``jsonschema`` against the operator's CRD
  (``deploy/k8s/crds/``, the YAML generated into the operator's API jar on Maven Central),
  made strict the way the API server's strict field validation is: an object that lists its
  properties accepts no others, unless the CRD preserves unknown fields there.
- The values the manifests share with the project are compared with the project itself:
  the training TOML passes the job's validator, the job's and the server's arguments parse
  with their real parsers, the Flink version, the jar and the Python are the image's, and
  every value stated twice (store, model, parallelism, checkpoint directory) agrees.

Not run: a cluster, the operator, the image build (no Docker engine here).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamlearn.cli import build_parser
from streamlearn.serving.openapi import openapi_document
from streamlearn.training.checkpoints import checkpoint_uri
from streamlearn.training.cli_args import config_from_args, job_arg_parser
from streamlearn.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
CRD = K8S / "crds" / "flinkdeployments.flink.apache.org-v1.yml"
CRD_MARKER = "# --- the file as the jar holds it, unchanged, below this line ---\n"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"

#: Kubernetes versions the core resources are validated for: the oldest and the newest whose
#: schemas kubernetes-validate 1.37.0 ships.
KUBERNETES_VERSIONS = ("1.25.0", "1.37.0")

#: flinkVersion values operators newer than the vendored CRD's (1.10.0) accept.
FLINK_VERSIONS_SINCE_THE_CRD = ["v2_0", "v2_1", "v2_2"]

#: The operator's rule for a FlinkDeployment's name (its DefaultValidator): a DNS label of at
#: most 45 characters, since Flink derives the names of its own resources from it.
DEPLOYMENT_NAME = re.compile(r"[a-z]([-a-z\d]{0,43}[a-z\d])?")

DEV_EXTRAS = "install the dev extras: .venv/bin/pip install -e '.[dev]'"


def kubernetes_validate() -> Any:
    try:
        import kubernetes_validate as kv
    except ImportError:
        pytest.fail(f"kubernetes-validate is not installed; {DEV_EXTRAS}", pytrace=False)
    return kv


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(
            "kubectl is not on PATH: `kubectl kustomize` builds deploy/k8s here "
            "(the machine images ship /usr/bin/kubectl)",
            pytrace=False,
        )
    return found


def kustomize(directory: Path) -> list[dict]:
    """``kubectl kustomize DIRECTORY``: the resources ``kubectl apply -k`` would send."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kubectl kustomize {directory}: {done.stderr.strip()}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# -- the build ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built() -> list[dict]:
    return kustomize(K8S)


@pytest.fixture(scope="module")
def flink(built: list[dict]) -> dict:
    return by_kind(built, "FlinkDeployment")


@pytest.fixture(scope="module")
def config_map(built: list[dict]) -> dict[str, str]:
    return by_kind(built, "ConfigMap", "streamlearn")["data"]


@pytest.fixture(scope="module")
def train_cfg(config_map: dict[str, str]) -> TrainConfig:
    """train.toml of the ConfigMap, through the job's own validator."""
    return TrainConfig.from_dict(tomllib.loads(config_map["train.toml"]))


@pytest.fixture(scope="module")
def server(built: list[dict]) -> dict:
    return by_kind(built, "Deployment", "streamlearn-server")


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def flink_pin(pyproject: dict) -> str:
    pins = dict(dep.split("==") for dep in pyproject["project"]["dependencies"])
    return pins["apache-flink"]


@pytest.fixture(scope="module")
def image_env() -> dict[str, str]:
    """The app stage's ENV of docker/Dockerfile, ``$VAR`` expanded in order."""
    text = DOCKERFILE.read_text().split("AS app", 1)[1]
    joined = re.sub(r"\\\n\s*", " ", text)
    env: dict[str, str] = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    for line in joined.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), ""), value)
    return env


def test_the_kustomization_builds_every_manifest_of_the_directory(built: list[dict]) -> None:
    """Nothing in deploy/k8s escapes validation by being left out of the kustomization."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = sorted(
        p.name for p in K8S.glob("*.yaml") if p.name not in {"kustomization.yaml",
                                                             "kustomizeconfig.yaml"}
    )
    assert sorted(kustomization["resources"]) == manifests
    from_files = {
        (doc["kind"], doc["metadata"]["name"])
        for name in manifests
        for doc in yaml.safe_load_all((K8S / name).read_text())
        if doc
    }
    assert {(d["kind"], d["metadata"]["name"]) for d in built} == from_files
    namespace = kustomization["namespace"]
    for doc in built:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]["name"]
    assert by_kind(built, "Namespace")["metadata"]["name"] == namespace
    binding = by_kind(built, "RoleBinding")
    assert [s["namespace"] for s in binding["subjects"]] == [namespace]


# -- schemas ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_resources_match_the_kubernetes_schema(built: list[dict], version: str) -> None:
    kv = kubernetes_validate()
    core = [doc for doc in built if doc["kind"] != "FlinkDeployment"]
    assert {d["kind"] for d in core} == {
        "Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "Service"
    }
    for doc in core:
        kv.validate(doc, version, strict=True)  # raises ValidationError, naming the field
    # the FlinkDeployment's pod template is a Pod's spec, which the operator merges into the
    # JobManager's and the TaskManagers' pods: Kubernetes' Pod schema, too
    flink = by_kind(built, "FlinkDeployment")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "template"},
           "spec": flink["spec"]["podTemplate"]["spec"]}
    kv.validate(pod, version, strict=True)


def strict(schema: Any) -> Any:
    """The CRD's schema as the API server applies it with strict field validation: an object
    schema that lists properties takes no other, unless it preserves unknown fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def crd_validator() -> Any:
    import jsonschema

    # half a megabyte of YAML: libyaml's loader where PyYAML has it (5x faster), else Python's
    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["spec"]["names"]["kind"] == "FlinkDeployment"
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    root = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    # every custom resource has these besides its schema's (the API server checks metadata)
    implicit = {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                "metadata": {"type": "object"}}
    root["properties"] = {**implicit, **root["properties"]}
    schema = strict(root)
    # The vendored CRD is operator 1.10.0's (the newest API jar on Maven Central); the Flink
    # versions later operators accept (their FlinkVersion enum: v2_0 since 1.11.0, v2_1 and
    # v2_2 since 1.13.0) are added here, and only they.
    enum = schema["properties"]["spec"]["properties"]["flinkVersion"]["enum"]
    assert enum[-1] == "v1_20", "a newer CRD: drop FLINK_VERSIONS_SINCE_THE_CRD"
    enum += FLINK_VERSIONS_SINCE_THE_CRD
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def crd_errors(validator: Any, doc: dict) -> list[str]:
    return sorted(
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(doc)
    )


def test_flinkdeployment_matches_the_operators_crd(flink: dict, crd_validator: Any) -> None:
    assert flink["apiVersion"] == "flink.apache.org/v1beta1"
    assert crd_errors(crd_validator, flink) == []
    assert DEPLOYMENT_NAME.fullmatch(flink["metadata"]["name"])


def test_vendored_crd_is_the_one_its_header_names() -> None:
    """The header says where the file comes from; below it, that file unchanged."""
    header, marker, body = CRD.read_text().partition(CRD_MARKER)
    assert marker, f"{CRD.name}: no line {CRD_MARKER.strip()!r}"
    noted = dict(re.findall(r"^# (source|version|sha256): (\S+)$", header, flags=re.M))
    assert set(noted) == {"source", "version", "sha256"}
    assert f":{noted['version']}" in noted["source"]
    assert hashlib.sha256(body.encode()).hexdigest() == noted["sha256"]


def test_the_validators_reject_broken_manifests(
    built: list[dict], flink: dict, server: dict, crd_validator: Any
) -> None:
    """A misspelt field or a wrong type fails each check: they are not vacuous."""
    kv = kubernetes_validate()
    version = KUBERNETES_VERSIONS[-1]

    misspelt = copy.deepcopy(server)
    container = misspelt["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kv.ValidationError, match="readinesProbe"):
        kv.validate(misspelt, version, strict=True)
    wrong_type = copy.deepcopy(server)
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError, match="two"):
        kv.validate(wrong_type, version, strict=True)
    service = copy.deepcopy(by_kind(built, "Service"))
    service["spec"]["ports"][0]["port"] = "http"
    with pytest.raises(kv.ValidationError):
        kv.validate(service, version, strict=True)

    bad = copy.deepcopy(flink)
    bad["spec"]["job"]["upgradeMod"] = bad["spec"]["job"].pop("upgradeMode")
    assert any("upgradeMod" in e for e in crd_errors(crd_validator, bad))
    bad = copy.deepcopy(flink)
    bad["spec"]["job"]["parallelism"] = "2"
    assert any(e.startswith("spec.job.parallelism") for e in crd_errors(crd_validator, bad))
    bad = copy.deepcopy(flink)
    bad["spec"]["flinkVersion"] = "v2_9"
    assert any(e.startswith("spec.flinkVersion") for e in crd_errors(crd_validator, bad))
    bad = copy.deepcopy(flink)
    bad["spec"]["podTemplate"]["spec"]["containers"][0]["envFrm"] = []
    assert any("envFrm" in e for e in crd_errors(crd_validator, bad))


# -- the training job ---------------------------------------------------------------------------


def test_flink_version_and_python_jar_are_the_images(
    flink: dict, flink_pin: str, image_env: dict[str, str]
) -> None:
    major, minor = flink_pin.split(".")[:2]
    assert flink["spec"]["flinkVersion"] == f"v{major}_{minor}"
    # the Kafka connector of jvm/pom.xml is released for the same Flink line ("5.0.0-2.2")
    pom = (ROOT / "jvm" / "pom.xml").read_text()
    connector = re.search(r"<flink.kafka.connector.version>(.+?)<", pom)
    assert connector and connector.group(1).endswith(f"-{major}.{minor}")
    spec = importlib.util.find_spec("pyflink")
    assert spec is not None and spec.submodule_search_locations
    pyflink = Path(next(iter(spec.submodule_search_locations)))
    jar = f"opt/flink-python-{flink_pin}.jar"
    assert (pyflink / jar).is_file(), f"PyFlink {flink_pin} ships no {jar}"
    # /opt/flink in the image is the PyFlink distribution (docker/Dockerfile links it)
    assert flink["spec"]["job"]["jarURI"] == f"local://{image_env['FLINK_HOME']}/{jar}"
    assert flink["spec"]["job"]["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    shipped = yaml.safe_load((pyflink / "conf" / "config.yaml").read_text())
    conf = flink["spec"]["flinkConfiguration"]
    assert conf["env.java.opts.all"] == shipped["env"]["java"]["opts"]["all"]
    # flink-python on the Flink processes' classpath and pemja loaded from there, as on the
    # standalone cluster `streamlearn flink start` runs
    assert "pemja." in conf["classloader.parent-first-patterns.additional"].split(";")
    assert 'ln -s "$FLINK_HOME"/opt/flink-python-*.jar "$FLINK_HOME/lib/"' in (
        DOCKERFILE.read_text()
    )


def test_pods_start_through_the_images_entrypoint(
    flink: dict, image_env: dict[str, str], tmp_path: Path
) -> None:
    """Native Kubernetes runs ``ENTRY bash -c "kubernetes-jobmanager.sh kubernetes-application"``:
    the image's entrypoint must pass that through, and find the script on the image's PATH."""
    conf = flink["spec"]["flinkConfiguration"]
    home = image_env["STREAMLEARN_HOME"]
    assert conf["kubernetes.entry.path"] == f"{home}/docker/entrypoint.sh"
    assert "COPY --chmod=755 docker/entrypoint.sh" in DOCKERFILE.read_text()
    assert conf["kubernetes.flink.conf.dir"] == image_env["FLINK_CONF_DIR"]
    assert f"{image_env['FLINK_HOME']}/bin" in image_env["PATH"].split(":")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for script in ("kubernetes-jobmanager.sh", "kubernetes-taskmanager.sh"):
        (bin_dir / script).write_text(f'#!/usr/bin/env bash\necho "{script}: $*"\n')
        (bin_dir / script).chmod(0o755)
    env = {"PATH": f"{os.environ['PATH']}:{bin_dir}", "FLINK_HOME": str(tmp_path)}
    for line in ("kubernetes-jobmanager.sh kubernetes-application", "kubernetes-taskmanager.sh"):
        done = subprocess.run(
            ["bash", str(ENTRYPOINT), "bash", "-c", line],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        script, _, args = line.partition(" ")
        assert done.stdout == f"{script}: {args}\n"


def test_the_job_runs_train_py_with_the_configmaps_toml(
    flink: dict,
    config_map: dict[str, str],
    train_cfg: TrainConfig,
    image_env: dict[str, str],
    tmp_path: Path,
) -> None:
    args = list(flink["spec"]["job"]["args"])
    # PyFlink's options first (the operator's PyFlink example): the client's Python, the file
    python = yaml.safe_load((ROOT / "docker" / "flink" / "config.yaml").read_text())["python"]
    assert args[:2] == ["-pyclientexec", python["client"]["executable"]]
    assert args[2] == "-py"
    job_file = Path(args[3])
    home = Path(image_env["STREAMLEARN_HOME"])
    assert job_file.relative_to(home) == Path("flink_jobs/train.py")
    assert (ROOT / "flink_jobs" / "train.py").is_file()
    assert "COPY flink_jobs flink_jobs" in DOCKERFILE.read_text()
    # the rest is train.py's own command line: parsed by its parser, the config file mounted
    parsed = job_arg_parser("train").parse_args(args[4:])
    container = flink["spec"]["podTemplate"]["spec"]["containers"][0]
    assert container["name"] == "flink-main-container"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "job-config")
    volume = next(v for v in flink["spec"]["podTemplate"]["spec"]["volumes"]
                  if v["name"] == "job-config")
    items = {i["key"]: i["path"] for i in volume["configMap"]["items"]}
    assert parsed.config == f"{mount['mountPath']}/{items['train.toml']}"
    assert volume["configMap"]["name"] == "streamlearn"
    # what a start resumes from is the operator's (upgradeMode last-state, Flink's HA
    # metadata), not the newest checkpoint the job itself would find on S3
    assert flink["spec"]["job"]["upgradeMode"] == "last-state"
    assert parsed.resume == "none" and not parsed.set
    # what the job reads at that path: the ConfigMap's TOML, and nothing on the command line
    # changes it
    (tmp_path / "train.toml").write_text(config_map["train.toml"])
    parsed.config = str(tmp_path / "train.toml")
    assert config_from_args(parsed) == train_cfg


def test_what_the_job_and_the_cluster_state_twice_agrees(
    flink: dict, config_map: dict[str, str], train_cfg: TrainConfig
) -> None:
    conf = flink["spec"]["flinkConfiguration"]
    job = flink["spec"]["job"]
    # the operator sizes the TaskManagers by job.parallelism; the job sets its own
    assert job["parallelism"] == train_cfg.job.parallelism
    # the directory the job checkpoints to is the one the operator restores from
    assert conf["execution.checkpointing.dir"] == checkpoint_uri(train_cfg)
    # everything durable on S3: Flink through its S3 plugin, the store through pyarrow
    # ... in one bucket, so that replacing it in one place and not another fails here
    bucket = re.fullmatch(r"s3://([^/?]+)/.*", train_cfg.store.uri)
    assert bucket, train_cfg.store.uri
    for key in ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir",
                "high-availability.storageDir"):
        assert conf[key].startswith(f"s3://{bucket.group(1)}/"), key
    assert conf["high-availability.type"] == "kubernetes"
    # last-state upgrades need the checkpoint directory and HA (the operator's own rules)
    assert job["upgradeMode"] == "last-state" and job["state"] == "running"
    # the JobManager runs train.py again after a restart: the same writer takes the lease over
    assert train_cfg.job.writer_id
    # the server serves what the job publishes
    assert config_map["store-uri"] == train_cfg.store.uri
    assert config_map["model"] == train_cfg.store.model


def test_the_s3_plugin_is_fetched_at_the_flink_version_of_the_pin(flink_pin: str) -> None:
    """Run the Dockerfile's own extraction of the version on pyproject.toml."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    command = next(line for line in text.splitlines() if "flink-s3-fs-hadoop:$flink" in line)
    extract = re.search(r'flink="\$\((sed .+? pyproject\.toml)\)"', command)
    assert extract, "the Dockerfile reads the Flink version from pyproject.toml with sed"
    done = subprocess.run(
        ["bash", "-c", extract.group(1)], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.stdout.strip() == flink_pin
    assert "COPY pyproject.toml pyproject.toml" in DOCKERFILE.read_text().split("AS jdk")[0]
    assert '"$FLINK_HOME/plugins/s3-fs-hadoop"' in DOCKERFILE.read_text()


# -- the prediction server ----------------------------------------------------------------------


def test_the_server_serves_the_jobs_store_on_all_interfaces(
    server: dict, config_map: dict[str, str], train_cfg: TrainConfig
) -> None:
    container = server["spec"]["template"]["spec"]["containers"][0]
    env = {}
    for var in container["env"]:
        ref = var["valueFrom"]
        if "configMapKeyRef" in ref:
            assert ref["configMapKeyRef"]["name"] == "streamlearn"
            env[var["name"]] = config_map[ref["configMapKeyRef"]["key"]]
    # Kubernetes expands $(VAR) from the container's environment and leaves unknown ones as is
    refs = {m for a in container["args"] for m in re.findall(r"\$\((\w+)\)", a)}
    assert refs <= set(env), f"undefined: {refs - set(env)}"
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
    assert args[0] == "streamlearn"
    parsed = build_parser().parse_args(args[1:])
    assert parsed.command == "serve"
    assert parsed.host == "0.0.0.0"  # the Service reaches the pod's address, not its loopback
    assert parsed.store == train_cfg.store.uri and parsed.model == train_cfg.store.model
    assert 1 <= parsed.poll_ms <= 200  # what `streamlearn serve` accepts
    port = next(p for p in container["ports"] if p["name"] == "http")
    assert port["containerPort"] == parsed.port
    token = next(v for v in container["env"] if v["name"] == "STREAMLEARN_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["optional"] is True


def test_probes_use_the_servers_health_routes(server: dict) -> None:
    container = server["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    doc = openapi_document("default", auth=True)
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
        get = doc["paths"][container[probe]["httpGet"]["path"]]["get"]
        assert "security" not in get, f"{probe} must need no token"
    assert "503" in doc["paths"]["/readyz"]["get"]["responses"]  # not ready: no model yet


def test_the_service_fronts_the_servers_pods(built: list[dict], server: dict) -> None:
    service = by_kind(built, "Service", "streamlearn-server")
    labels = server["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert server["spec"]["selector"]["matchLabels"].items() <= labels.items()
    names = {p["name"] for p in server["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= names


def quantity(text: str) -> float:
    """A Kubernetes quantity of the forms the manifests use: ``500m``, ``2``, ``512Mi``."""
    found = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|)", str(text))
    assert found, f"unexpected quantity {text!r}"
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "": 1}
    return float(found.group(1)) * units[found.group(2)]


def test_every_container_asks_for_what_it_may_use(server: dict) -> None:
    for container in server["spec"]["template"]["spec"]["containers"]:
        resources = container["resources"]
        for what in ("cpu", "memory"):
            assert quantity(resources["requests"][what]) <= quantity(resources["limits"][what])


# -- one image, one identity, one secret ---------------------------------------------------------


def test_one_image_at_the_project_version(
    built: list[dict], flink: dict, server: dict, pyproject: dict, tmp_path: Path
) -> None:
    image = f"streamlearn:{pyproject['project']['version']}"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["x-streamlearn"]["image"] == image
    assert flink["spec"]["image"] == image
    assert server["spec"]["template"]["spec"]["containers"][0]["image"] == image
    # retagging through kustomize's `images` reaches the FlinkDeployment too
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(K8S, overlay)],
        "images": [{"name": "streamlearn", "newName": "registry.example/streamlearn",
                    "newTag": "7"}],
    }))
    retagged = kustomize(overlay)
    assert by_kind(retagged, "FlinkDeployment")["spec"]["image"] == "registry.example/streamlearn:7"
    pod = by_kind(retagged, "Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example/streamlearn:7"


def test_flink_pods_and_server_share_the_secret_and_region(
    built: list[dict], flink: dict, server: dict
) -> None:
    flink_container = flink["spec"]["podTemplate"]["spec"]["containers"][0]
    server_container = server["spec"]["template"]["spec"]["containers"][0]
    for container in (flink_container, server_container):
        assert container["envFrom"] == [{"secretRef": {"name": "streamlearn-s3"}}]
        region = next(v for v in container["env"] if v["name"] == "AWS_REGION")
        assert region["valueFrom"]["configMapKeyRef"] == {"name": "streamlearn",
                                                          "key": "aws-region"}
    for pod in (flink["spec"]["podTemplate"]["spec"], server["spec"]["template"]["spec"]):
        # the image's user, by number: Kubernetes checks runAsNonRoot only against a number
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
    assert "--uid 10001" in DOCKERFILE.read_text()
    account = by_kind(built, "ServiceAccount")["metadata"]["name"]
    assert flink["spec"]["serviceAccount"] == account
    binding = by_kind(built, "RoleBinding")
    assert binding["subjects"][0]["name"] == account
    assert binding["roleRef"]["name"] == by_kind(built, "Role")["metadata"]["name"]
