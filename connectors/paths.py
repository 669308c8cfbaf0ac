"""Where streamlearn keeps what it runs: project root, state directory, jars.

Everything lives under the project checkout unless told otherwise:

- ``STREAMLEARN_HOME`` (default: the checkout holding this package) is the root,
- ``STREAMLEARN_STATE_DIR`` (default ``<root>/.state``) holds broker and Flink
  data, logs and pid files,
- ``<root>/jvm/lib/kafka`` and ``<root>/jvm/lib/flink`` hold the jars that
  ``make jars`` resolves from Maven Central (see ``jvm/pom.xml``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from streamlearn.errors import ServiceError

__all__ = [
    "project_root",
    "state_dir",
    "jar_dir",
    "kafka_classpath",
    "flink_connector_jar",
    "ensure_jars",
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


def jar_dir(kind: str) -> Path:
    """``jvm/lib/kafka`` or ``jvm/lib/flink``."""
    return project_root() / "jvm" / "lib" / kind


def ensure_jars() -> None:
    """Resolve the pinned jars with Maven if they are not there yet.

    ``make jars`` does the same; this is for users who call the library
    directly. A second call with the jars present does nothing.
    """
    if any(jar_dir("kafka").glob("kafka_2.13-*.jar")) and any(
        jar_dir("flink").glob("flink-sql-connector-kafka-*.jar")
    ):
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(
            "the Kafka and Flink connector jars are missing and `mvn` is not on PATH: "
            "install Maven, then run `make jars`"
        )
    pom = project_root() / "jvm" / "pom.xml"
    subprocess.run([mvn, "-q", "-f", str(pom), "package"], check=True)


def kafka_classpath() -> str:
    """The broker's classpath (``jvm/lib/kafka/*``), resolving jars if needed."""
    ensure_jars()
    return str(jar_dir("kafka") / "*")


def flink_connector_jar() -> Path:
    """The Flink Kafka connector jar, resolving it if needed."""
    ensure_jars()
    jars = sorted(jar_dir("flink").glob("flink-sql-connector-kafka-*.jar"))
    return jars[-1]
