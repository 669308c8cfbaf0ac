"""``streamlearn serve`` and ``streamlearn predict`` as subprocesses: defaults
like the other commands, the model that is not in the store named with the
models that are, and ``predict`` printing what the HTTP API returns."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from streamlearn.store import Lineage, ModelStore
from tests.models import constant_model

CLI = "import sys, streamlearn.cli as cli; sys.exit(cli.main())"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cwd: Path, *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "serve", "--port", str(port), *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())  # type: ignore[union-attr]
        try:
            httpx.get(url + "/healthz", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    stop(proc)
    raise AssertionError("the server did not answer within 60 s")


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode()


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 30
    while httpx.get(url + "/readyz", timeout=2).status_code != 200:
        assert time.monotonic() < deadline, "no version served within 30 s"
        time.sleep(0.05)


def test_serve_names_a_model_that_is_not_in_the_store_and_the_models_that_are(
    tmp_path: Path,
) -> None:
    store = tmp_path / "models"
    ModelStore(str(store), "clicks").commit(constant_model(1.0), Lineage(events=1))
    ModelStore(str(store), "default").commit(constant_model(2.0), Lineage(events=1))
    proc, url = start(tmp_path, "--store", str(store), "--model", "typo")
    try:
        r = httpx.post(url + "/v1/predict", json={"features": {"a": 1}})
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        doc = r.json()
        assert doc["model"] == "typo" and doc["models_in_store"] == ["clicks", "default"]
        assert "'typo' is not in the store" in doc["error"]
        ready = httpx.get(url + "/readyz")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
        # the model appears: served, as before
        ModelStore(str(store), "typo").commit(constant_model(3.0), Lineage(events=1))
        wait_ready(url)
        assert httpx.post(url + "/v1/predict", json={"features": {"a": 1}}).json()[
            "prediction"
        ] == 3.0
    finally:
        err = stop(proc)
    lines = [line for line in err.splitlines() if line.startswith("streamlearn serve:")]
    assert len(lines) == 1, err
    assert "'typo'" in lines[0] and "'clicks', 'default'" in lines[0], lines[0]
    assert str(store) in lines[0]


def test_serve_without_flags_serves_the_default_model_of_the_default_store(
    tmp_path: Path,
) -> None:
    ModelStore(str(tmp_path / ".streamlearn" / "models"), "default").commit(
        constant_model(4.0), Lineage(events=1)
    )
    proc, url = start(tmp_path)  # only --port, so that the test takes a free one
    try:
        wait_ready(url)
        doc = httpx.post(url + "/v1/predict", json={"features": {"a": 1}}).json()
        assert doc["model"] == "default" and doc["prediction"] == 4.0
    finally:
        err = stop(proc)
    assert "streamlearn serve:" not in err  # nothing to say: the model is there
    help_text = subprocess.run(
        [sys.executable, "-c", CLI, "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    words = " ".join(help_text.split())
    assert "(default: ./.streamlearn/models)" in words and "(default: default)" in words


def run_predict(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CLI, "predict", "--url", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_predict_prints_what_the_http_api_returns(tmp_path: Path) -> None:
    store = tmp_path / "models"
    ModelStore(str(store), "ctr").commit(constant_model(5.0), Lineage(events=1))
    proc, url = start(tmp_path, "--store", str(store), "--model", "ctr")
    try:
        wait_ready(url)
        bodies: list[Any] = [
            {"features": {"age": 2}, "id": "e-1", "key": "user-9"},
            {"events": [{"features": {"age": 2}, "id": 1}, {"features": {"b": "x"}, "key": "k"}]},
            {"features": {"age": 2}},
        ]
        for body in bodies:
            text = orjson.dumps(body).decode()
            done = run_predict(url, text)
            assert done.returncode == 0, done.stderr
            printed = orjson.loads(done.stdout)
            answered = httpx.post(url + "/v1/predict", content=text).json()
            printed.pop("age_s"), answered.pop("age_s")  # the one field that moves
            assert printed == answered
            assert printed["model"] == "ctr"
        assert printed["known_features"] == 0  # constant_model knows no feature
        one = orjson.loads(run_predict(url, orjson.dumps(bodies[0]).decode()).stdout)
        assert (one["id"], one["key"]) == ("e-1", "user-9")
        bad = run_predict(url, '{"features": {"age": [1]}}')
        assert bad.returncode == 1 and "features.age" in bad.stderr
    finally:
        stop(proc)
