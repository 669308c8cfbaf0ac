"""The ``streamlearn`` command as a user runs it: a subprocess, its exit code and output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import free_port

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
    # (a warning of theirs may still show: only their INFO chatter is held back)
    assert " INFO kafka." not in quiet.stderr, quiet.stderr

    loud = run("-v", "topics", "create", f"{topic_name}-v", "--bootstrap", kafka_broker.bootstrap)
    assert loud.returncode == 0, loud.stderr
    assert " INFO kafka." in loud.stderr or " DEBUG kafka." in loud.stderr


def _env(state: Path) -> dict[str, str]:
    return {**os.environ, "STREAMLEARN_STATE_DIR": str(state)}


def _cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)


def test_flags_before_or_after_the_action_mean_the_same(tmp_path: Path) -> None:
    """``--port`` after ``flink stop`` / ``status`` is the port asked about (it was taken
    for the job's arguments, and 8081 answered); likewise for every command with an
    action: ``kafka``, ``topics``, ``models``."""
    env = _env(tmp_path / "state")
    port = free_port()
    for args in (("flink", "status", "--port", str(port)),
                 ("flink", "--port", str(port), "status")):
        out = _cli(*args, env=env)
        assert out.returncode == 3, out.stderr
        assert out.stdout.strip() == (f"stopped  http://127.0.0.1:{port}  (start it with "
                                      f"`streamlearn flink start --port {port}`)")
    out = _cli("flink", "stop", "--port", str(port), env=env)
    assert out.stdout.strip() == f"no Flink cluster was running on 127.0.0.1:{port}"
    out = _cli("flink", "status", "--json", "--port", str(port), env=env)
    assert json.loads(out.stdout)["rest_url"] == f"http://127.0.0.1:{port}"
    job = tmp_path / "job.py"
    job.write_text("print('never run')\n")
    out = _cli("flink", "submit", str(job), "--port", str(port), "--", "--source", "a", env=env)
    assert out.returncode == 1
    assert out.stderr.strip() == (f"streamlearn flink: no Flink cluster answers at 127.0.0.1:"
                                  f"{port}; start one with `streamlearn flink start --port {port}`")

    for args in (("kafka", "status", "--port", str(port)),
                 ("kafka", "--port", str(port), "status")):
        out = _cli(*args, env=env)
        assert out.returncode == 3, out.stderr
        assert out.stdout.strip() == (f"stopped  127.0.0.1:{port}  (start it with "
                                      f"`streamlearn kafka start --port {port}`)")

    # an optional positional after a flag: `topics create --only TOPIC`
    out = _cli("topics", "create", "--only", "events", "--bootstrap", f"127.0.0.1:{port}",
               env=env)
    assert out.returncode == 1, out.stderr
    assert f"no broker at 127.0.0.1:{port}" in out.stderr

    # a command whose actions are parsers of their own: the shared flags go either side
    a, b = tmp_path / "store-a", tmp_path / "store-b"
    for args, store in ((("models", "--store", str(a), "list"), a),
                        (("models", "list", "--store", str(a)), a),
                        (("models", "--store", str(a), "list", "--store", str(b)), b)):
        out = _cli(*args, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"model 'default' has no versions in {store}"


def _commands_and_actions() -> list[tuple[str, ...]]:
    """Every command, and every action of a command that has actions, from the parser."""
    import argparse

    from streamlearn.cli import build_parser

    top = build_parser()
    (commands,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    out: list[tuple[str, ...]] = [()]
    for name, parser in commands.choices.items():
        out.append((name,))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                out += [(name, sub) for sub in action.choices]
            elif action.dest == "action" and action.choices:
                out += [(name, choice) for choice in action.choices]
    return out


def _processes_with(marker: str) -> list[int]:
    """Processes (of any kind: java, python, bash) whose environment holds ``marker``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker.encode() in (proc / "environ").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_help_of_every_command_and_action_starts_nothing(tmp_path: Path) -> None:
    """``--help`` prints the usage and exits 0, before anything runs: no process is
    left behind (one started by the command would carry its state directory in its
    environment), no state directory appears, nothing is written where it ran."""
    state, cwd = tmp_path / "state", tmp_path / "cwd"
    cwd.mkdir()
    env = _env(state)
    cases = _commands_and_actions()
    assert ("flink", "start") in cases and ("kafka", "start") in cases
    assert ("models", "list") in cases and ("topics", "create") in cases

    def one(case: tuple[str, ...]) -> tuple[tuple[str, ...], subprocess.CompletedProcess]:
        return case, _cli(*case, "--help", env=env, cwd=cwd)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, cases))
    for case, out in results:
        assert out.returncode == 0, (case, out.stderr)
        assert out.stdout.startswith("usage: streamlearn"), (case, out.stdout[:200])
    assert not state.exists(), sorted(str(p) for p in state.rglob("*"))
    assert list(cwd.iterdir()) == []
    assert _processes_with(f"STREAMLEARN_STATE_DIR={state}") == []


def test_flink_conf_items_are_checked_before_anything_starts(tmp_path: Path) -> None:
    env = _env(tmp_path / "state")
    for item, message in (
        ("novalue", "field `--conf`: expected KEY=VALUE, e.g. metrics.reporter.prom.port=9250, "
                    "got 'novalue'"),
        ("rest.port=5", "field `--conf`: expected a key other than rest.port (it is --port), "
                        "got 'rest.port=5'"),
    ):
        out = _cli("flink", "start", "--conf", item, "--port", str(free_port()), env=env)
        assert out.returncode == 1
        assert out.stderr == f"streamlearn flink: {message}\n"
    assert not (tmp_path / "state").exists()
