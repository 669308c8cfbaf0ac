"""Where streamlearn keeps what it runs: project root, state directory, jars.

Everything lives under the project checkout unless told otherwise:

- ``STREAMLEARN_HOME`` (default: the checkout holding this package) is the root,
- ``STREAMLEARN_STATE_DIR`` (default ``<root>/.state``) holds broker and Flink
  data, logs and pid files,
- ``<root>/jvm/lib/kafka`` and ``<root>/jvm/lib/flink`` hold the jars that
  ``make jars`` resolves from Maven Central (see ``jvm/pom.xml``), and
  ``jvm/lib/flink/streamlearn-flink.jar``, compiled here from ``jvm/src`` against
  PyFlink's own jars (``python -m connectors.paths`` builds what is missing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from streamlearn.errors import ServiceError

__all__ = [
    "HELPER_JAR",
    "project_root",
    "state_dir",
    "jar_dir",
    "pyflink_home",
    "kafka_classpath",
    "flink_connector_jar",
    "flink_job_jars",
    "ensure_jars",
    "build_helper_jar",
]


def project_root() -> Path:
    """The checkout root (``STREAMLEARN_HOME`` overrides)."""
    env = os.environ.get("STREAMLEARN_HOME")
    return Path(env).resolve() if env else Path(__file__).resolve().parent.parent


def state_dir(*parts: str) -> Path:
    """A directory under the state root, created on demand."""
    env = os.environ.get("STREAMLEARN_STATE_DIR")
    root = Path(env).resolve() if env else project_root() / ".state"
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def pyflink_home() -> Path:
    """The Flink distribution inside the installed PyFlink wheel (has ``bin/``, ``lib/``)."""
    import importlib.util

    spec = importlib.util.find_spec("pyflink")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("PyFlink is not installed in this Python: run `make venv`")
    return Path(next(iter(spec.submodule_search_locations)))


def jar_dir(kind: str) -> Path:
    """``jvm/lib/kafka`` or ``jvm/lib/flink``."""
    return project_root() / "jvm" / "lib" / kind


HELPER_JAR = "streamlearn-flink.jar"


def ensure_jars() -> None:
    """Resolve the pinned jars with Maven, and build the helper jar, if missing.

    ``make jars`` runs this; a second call with the jars present does nothing
    and downloads nothing.
    """
    if not (
        any(jar_dir("kafka").glob("kafka_2.13-*.jar"))
        and any(jar_dir("flink").glob("flink-sql-connector-kafka-*.jar"))
    ):
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ServiceError(
                "the Kafka and Flink connector jars are missing and `mvn` is not on PATH: "
                "install Maven, then run `make jars`"
            )
        pom = project_root() / "jvm" / "pom.xml"
        subprocess.run([mvn, "--batch-mode", "-q", "-f", str(pom), "package"], check=True)
    if not (jar_dir("flink") / HELPER_JAR).exists():
        build_helper_jar()


def build_helper_jar() -> Path:
    """Compile ``jvm/src/main/java`` against PyFlink's and the connector's jars.

    The classes are tiny adapters PyFlink cannot express in Python (see the
    sources); compiling them here needs only the JDK, no further downloads.
    """
    import tempfile

    javac, jar = shutil.which("javac"), shutil.which("jar")
    if javac is None or jar is None:
        raise ServiceError("`javac` and `jar` are needed (a JDK 17, not only a JRE)")
    src = project_root() / "jvm" / "src" / "main" / "java"
    sources = sorted(str(p) for p in src.rglob("*.java"))
    connector = sorted(jar_dir("flink").glob("flink-sql-connector-kafka-*.jar"))[-1]
    classpath = os.pathsep.join([str(pyflink_home() / "lib" / "*"), str(connector)])
    out = jar_dir("flink") / HELPER_JAR
    with tempfile.TemporaryDirectory() as classes:
        subprocess.run(
            [javac, "--release", "17", "-cp", classpath, "-d", classes, *sources], check=True
        )
        subprocess.run([jar, "cf", str(out), "-C", classes, "."], check=True)
    return out


def flink_job_jars() -> list[Path]:
    """The jars every streamlearn Flink job needs: the Kafka connector and the helper jar."""
    ensure_jars()
    return [flink_connector_jar(), jar_dir("flink") / HELPER_JAR]


def kafka_classpath() -> str:
    """The broker's classpath (``jvm/lib/kafka/*``), resolving jars if needed."""
    ensure_jars()
    return str(jar_dir("kafka") / "*")


def flink_connector_jar() -> Path:
    """The Flink Kafka connector jar, resolving it if needed."""
    ensure_jars()
    jars = sorted(jar_dir("flink").glob("flink-sql-connector-kafka-*.jar"))
    return jars[-1]


if __name__ == "__main__":  # `python -m connectors.paths`: what `make jars` runs
    ensure_jars()
    print("\n".join(str(p) for p in [jar_dir("kafka"), *flink_job_jars()]))
