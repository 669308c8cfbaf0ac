"""A broker outage longer than the delivery timeout, then recovery, on a real broker."""

from __future__ import annotations

import time

import orjson
import pytest

from connectors.kafka_broker import LocalBroker
from connectors.kafka_io import DeliveryError, consume_all, create_topics
from streamlearn.publish import Publisher
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Short timeouts so the outage outlasts them quickly.
QUICK = {
    "request_timeout_ms": 2_000,
    "delivery_timeout_ms": 4_000,
    "reconnect_backoff_max_ms": 500,
    "max_block_ms": 5_000,
}


def _events(start: int, n: int) -> list[dict]:
    return [{"id": f"e{i}", "key": f"k{i % 11}", "features": {"x": float(i)}, "label": i % 2}
            for i in range(start, start + n)]


@pytest.fixture(autouse=True)
def _close_refused_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-python 3.0.12 keeps the socket of a refused connection attempt
    alive in a reference cycle (its exception's traceback) until the garbage
    collector runs, which then warns "unclosed socket" in whatever test runs at
    that moment. Here a refused attempt closes its socket at once; what the test
    checks (what the publisher reports) does not depend on it."""
    from kafka.net import inet

    attempt = inet.KafkaNetSocket.sock_connect

    async def sock_connect(self, net, sock, sockaddr, timeout_at=None):
        try:
            return await attempt(self, net, sock, sockaddr, timeout_at=timeout_at)
        except BaseException:
            sock.close()
            raise

    monkeypatch.setattr(inet.KafkaNetSocket, "sock_connect", sock_connect)


def test_failures_reported_after_an_outage_are_exactly_the_events_not_in_the_topic(tmp_path):
    broker = LocalBroker(port=free_port(2), directory=tmp_path)
    topic = "events"
    try:
        broker.start()
        create_topics(broker.bootstrap, {topic: 2})
        single = Publisher(broker.bootstrap, topic, **QUICK)
        env = Publisher(broker.bootstrap, topic, envelope=True, envelope_size=25, **QUICK)
        pubs = (single, env)
        published: list[dict] = []
        reported: list[dict] = []

        def round_(start: int, peek: bool = False) -> list[DeliveryError]:
            errors = []
            for k, pub in enumerate(pubs):
                events = _events(start + 1000 * k, 100)
                published.extend(events)
                pub.publish_many(events)
            if peek:  # a flush that gives up early: nothing failed yet, all pending
                with pytest.raises(DeliveryError, match="100 messages still unresolved") as early:
                    single.flush(timeout_s=0.5)
                assert early.value.count == 0 and early.value.pending == 100
            for pub in pubs:  # the second flush waits out the same timeout as the first
                try:
                    pub.flush()
                except DeliveryError as exc:
                    reported.extend(exc.failed)
                    errors.append(exc)
            return errors

        assert round_(0) == []
        broker.stop()
        outage = time.monotonic()
        during = round_(10_000, peek=True)  # each flush waits out the delivery timeout
        assert time.monotonic() - outage > QUICK["delivery_timeout_ms"] / 1000
        assert [e.count for e in during] == [100, 100], [str(e) for e in during]
        assert all(e.retriable and set(e.reasons) == {"KafkaTimeoutError"} for e in during)
        broker.start()  # same directory and port: the topic and its data are back
        assert round_(20_000) == [], "flushes after the outage succeed"
        assert round_(30_000) == []
        for pub in pubs:
            pub.close()

        messages = sum(pub.delivered for pub in pubs)
        landed = []
        for r in consume_all(broker.bootstrap, topic, expected=messages):
            doc = orjson.loads(r.value)
            landed.extend(e["id"] for e in doc["events"]) if "events" in doc else landed.append(
                doc["id"]
            )
    finally:
        broker.stop()
    assert len(landed) == len(set(landed)), "nothing twice"
    missing = {e["id"] for e in published} - set(landed)
    assert sorted(e["id"] for e in reported) == sorted(missing), (
        "the failures reported are exactly the events not in the topic"
    )
    assert len(published) == 800 and len(missing) == 200
