"""The real server process (``streamlearn serve``) over HTTP, with the real store and learners.

Each test module run starts one server subprocess on a free port per store and
kills it in a fixture finaliser, even when a test fails. The swap test runs
for ``STREAMLEARN_SWAP_SECONDS`` seconds (default 30).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pyarrow as pa
import pytest

from streamlearn.cli import main as cli_main
from streamlearn.errors import ServiceError, ValidationError, VersionNotFound
from streamlearn.learners import learner_from_state
from streamlearn.serving import Client
from streamlearn.state import ModelState
from streamlearn.store import Lineage, ModelStore
from tests.models import EVENTS, constant_model, trained_classifier

SWAP_SECONDS = float(os.environ.get("STREAMLEARN_SWAP_SECONDS", "30"))
MODEL = "ctr"
# The dispatcher lists its subcommands in COMMANDS; make sure ours are there.
RUN_CLI = (
    "import sys, streamlearn.cli as cli; "
    "cli.COMMANDS += tuple(c for c in ('serve', 'predict') if c not in cli.COMMANDS); "
    "sys.exit(cli.main())"
)


@pytest.fixture(autouse=True)
def _serving_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamlearn.cli as cli

    extra = tuple(c for c in ("serve", "predict") if c not in cli.COMMANDS)
    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + extra)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``streamlearn serve`` in a subprocess; :meth:`stop` kills it."""

    def __init__(self, store: Path, *extra: str) -> None:
        self.port = free_port()
        self.log = (store.parent / f"server-{self.port}.log").open("w+b")
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-c", RUN_CLI, "serve", "--store", str(store), "--model", MODEL]
        argv += ["--port", str(self.port), *extra]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(self.output()[-3000:])
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("server did not answer /healthz within 60 s")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def output(self) -> str:
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")


def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError("condition not met within the time allowed")


def served_version(client: Client) -> int | None:
    try:
        return client.current()["version"]
    except ServiceError:
        return None


@pytest.fixture()
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture()
def server(store_dir: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(store_dir)
    try:
        yield proc
    finally:
        proc.stop()


def test_readiness_before_and_after_the_first_model(server: ServerProcess, store_dir: Path) -> None:
    with Client(server.url) as client:
        assert not client.ready()
        assert httpx.get(server.url + "/readyz").status_code == 503
        with pytest.raises(ServiceError) as err:
            client.predict({"age": 1.0})
        assert err.value.retriable
        ModelStore(str(store_dir), MODEL).commit(constant_model(7.0), Lineage(events=1))
        wait_for(client.ready)
        assert client.predict({"age": 1.0}).value == 7.0


def fm_classifier() -> Any:
    from streamlearn.learners import FMClassifier

    model = FMClassifier(k=4, bits=10, init_std=0.1)
    model.learn_many(EVENTS, [(e["age"] > 4) != (e["country"] == "FR") for e in EVENTS])
    return model


@pytest.mark.parametrize("learner", ["logistic", "fm"])
def test_predictions_match_the_learner_in_process(
    server: ServerProcess, store_dir: Path, learner: str
) -> None:
    store = ModelStore(str(store_dir), MODEL)
    model = trained_classifier() if learner == "logistic" else fm_classifier()
    # linear models to the last bits; a factorization machine to 1e-9 (sums in other orders)
    close = {"rtol": 1e-12} if learner == "logistic" else {"rtol": 0, "atol": 1e-9}
    version = store.commit(model.state(), Lineage(events=len(EVENTS), metrics={"log_loss": 0.5}))
    reference = learner_from_state(ModelState.from_bytes(store.get(version).to_bytes()))
    expected = reference.predict_proba_many(EVENTS[:50])
    with Client(server.url) as client:
        wait_for(client.ready)
        for _ in range(2):  # in Python, then from the native table that learned its shares
            one = client.predict(EVENTS[3])
            assert one.version == version and one.classes == [False, True]
            np.testing.assert_allclose(one.probabilities, expected[3], **close)
            assert one.value == reference.predict_one(EVENTS[3])
            raw = orjson.loads(client.predict_raw(orjson.dumps({"features": EVENTS[3]})))
            assert raw["known_features"] == 3 - (not EVENTS[3]["tags"])
            np.testing.assert_allclose(raw["probabilities"], expected[3], **close)
        many = client.predict_many(EVENTS[:50])
        np.testing.assert_allclose(many.probabilities, expected, **close)
        assert many.values == reference.predict_many(EVENTS[:50]).tolist()
        table = pa.table(
            {
                "age": [e["age"] for e in EVENTS[:50]],
                "country": [e["country"] for e in EVENTS[:50]],
                "tags": [e["tags"] or None for e in EVENTS[:50]],
            }
        )
        arrow = client.predict_table(table)
        np.testing.assert_allclose(arrow.probabilities, expected, **close)
        current = client.current()
        assert current["version"] == version and current["lineage"]["metrics"] == {"log_loss": 0.5}
        assert [v["version"] for v in client.models()["versions"]] == [version]


def test_version_query_pins_and_rollbacks(server: ServerProcess, store_dir: Path) -> None:
    store = ModelStore(str(store_dir), MODEL)
    for value in (1.0, 2.0, 3.0):
        store.commit(constant_model(value), Lineage())
    with Client(server.url) as client:
        wait_for(lambda: served_version(client) == 3)
        assert client.predict({"x": 1.0}).value == 3.0
        old = client.predict({"x": 1.0}, version=1)
        assert (old.version, old.value) == (1, 1.0)
        assert client.predict_many([{"x": 1.0}] * 3, version=2).values == [2.0] * 3
        with pytest.raises(VersionNotFound):
            client.predict({"x": 1.0}, version=99)
        store.pin(2)
        wait_for(lambda: served_version(client) == 2)
        assert client.predict({"x": 1.0}).value == 2.0
        store.commit(constant_model(4.0), Lineage())  # pinned: still 2
        time.sleep(0.3)
        assert client.predict({"x": 1.0}).version == 2
        store.unpin()
        wait_for(lambda: served_version(client) == 4)
        rollback = store.rollback(1)
        wait_for(lambda: served_version(client) == rollback)
        assert client.predict({"x": 1.0}).value == 1.0
        metrics = client.metrics()
        assert f'streamlearn_model_version{{model="{MODEL}"}} {rollback}' in metrics
        swaps = re.search(r"streamlearn_model_swaps_total\{[^}]*\} (\d+)", metrics)
        assert swaps is not None and int(swaps.group(1)) >= 4


def test_bad_requests_get_named_fields_and_the_cli_works(
    server: ServerProcess, store_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ModelStore(str(store_dir), MODEL).commit(constant_model(5.0), Lineage())
    with Client(server.url) as client:
        wait_for(client.ready)
        with pytest.raises(ValidationError) as err:
            client.predict_many([{"age": 1.0}, {"age": {"no": 1}}])
        assert err.value.field == "events[1].features.age"
        with pytest.raises(ValidationError) as err:
            client.predict({})
        # the rule and words of training's decoder (streamlearn.events)
        assert err.value.field == "event.features"
        assert (err.value.expected, err.value.got) == ("at least one feature", "an empty object")
    assert cli_main(["predict", "--url", server.url, '{"features": {"age": 2}}']) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out["prediction"] == 5.0 and out["version"] == 1
    assert cli_main(["predict", "--url", server.url, '{"features": {"age": [1]}}']) == 1
    assert "features.age" in capsys.readouterr().err
    dead = f"http://127.0.0.1:{free_port()}"
    assert cli_main(["predict", "--url", dead, "--timeout", "1", '{"features": {"a": 1}}']) == 1
    assert "cannot reach" in capsys.readouterr().err


def test_token_is_required_when_set(store_dir: Path) -> None:
    ModelStore(str(store_dir), MODEL).commit(constant_model(1.0), Lineage())
    proc = ServerProcess(store_dir, "--token", "s3cret")
    try:
        with Client(proc.url) as anonymous:
            wait_for(anonymous.ready)
            with pytest.raises(ServiceError, match="token"):
                anonymous.predict({"a": 1.0})
        with Client(proc.url, token="s3cret") as client:
            assert client.predict({"a": 1.0}).value == 1.0
    finally:
        proc.stop()


def test_a_taken_port_is_reported(server: ServerProcess, store_dir: Path) -> None:
    code = cli_main(
        ["serve", "--store", str(store_dir), "--model", MODEL, "--port", str(server.port)]
    )
    assert code == 1


# -- hot swap under load -------------------------------------------------------------


async def _load(
    port: int, stop: threading.Event, results: dict[str, Any], connections: int
) -> None:
    body = orjson.dumps({"features": {"age": 3.0, "country": "FR"}})
    request = (
        f"POST /v1/predict HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not stop.is_set():
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
                doc = orjson.loads(await reader.readexactly(length))
                results["requests"] += 1
                if status != 200:
                    results["failed"].append((status, doc))
                elif doc["prediction"] != float(doc["version"]):
                    results["mismatched"].append(doc)
                else:
                    results["versions"].add(doc["version"])
        finally:
            writer.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))


def test_hot_swap_under_load_loses_no_request(server: ServerProcess, store_dir: Path) -> None:
    store = ModelStore(str(store_dir), MODEL)
    store.commit(constant_model(1.0), Lineage())
    with Client(server.url) as client:
        wait_for(client.ready)
    stop = threading.Event()
    results: dict[str, Any] = {"requests": 0, "failed": [], "mismatched": [], "versions": set()}
    published = [1]

    def writer() -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            version = store.commit(constant_model(float(len(published) + 1)), Lineage())
            published.append(version)
            next_at += 0.1
            stop.wait(max(next_at - time.monotonic(), 0.0))

    thread = threading.Thread(target=writer)
    started = time.monotonic()
    thread.start()
    try:
        timer = threading.Timer(SWAP_SECONDS, stop.set)
        timer.start()
        asyncio.run(_load(server.port, stop, results, connections=8))
    finally:
        stop.set()
        thread.join()
    elapsed = time.monotonic() - started
    rate = results["requests"] / elapsed
    print(
        f"\nswap test: {results['requests']} requests in {elapsed:.1f}s ({rate:.0f} req/s), "
        f"{len(published)} versions published, {len(results['versions'])} seen in answers"
    )
    assert published == list(range(1, len(published) + 1))  # version v predicts v
    assert results["failed"] == []
    assert results["mismatched"] == []
    assert len(results["versions"]) > 1
    assert server.alive()
