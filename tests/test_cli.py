"""The ``streamlearn`` command as a user runs it: a subprocess, its exit code and output."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

#: The installed console script, beside this interpreter.
CLI = [str(Path(sys.executable).parent / "streamlearn")]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_version_prints_the_installed_version_and_starts_nothing() -> None:
    out = run("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"streamlearn {version('streamlearn')}"


@pytest.mark.integration
def test_library_info_lines_only_with_verbose(kafka_broker, topic_name: str) -> None:
    """kafka-python's INFO lines (connections, metadata) reach the terminal only
    with ``-v``; the command's own answer is there either way."""
    quiet = run("topics", "create", topic_name, "--bootstrap", kafka_broker.bootstrap)
    assert quiet.returncode == 0, quiet.stderr
    assert topic_name in quiet.stdout + quiet.stderr
    assert " kafka." not in quiet.stderr, quiet.stderr

    loud = run("-v", "topics", "create", f"{topic_name}-v", "--bootstrap", kafka_broker.bootstrap)
    assert loud.returncode == 0, loud.stderr
    assert " kafka." in loud.stderr
