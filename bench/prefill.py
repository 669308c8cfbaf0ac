"""Pre-fill Kafka topics with the clicks stream for the end-to-end benchmark.

One pass over :func:`streamlearn.generators.clicks` fills two topics with the
same events:

- single events, one JSON event per message keyed by the event's key, sent by
  the official Java client (kafka-python manages ~10k messages/s here; the Java
  client is not the bottleneck: it drains what Python generates). The Java
  source is embedded below and run in single-file source mode with the jars
  of ``jvm/lib/kafka``; Python streams ``key<TAB>json`` lines to its stdin.
- envelopes of ``envelope_size`` events, by :class:`streamlearn.publish.Publisher`
  (``envelope=True``), so envelopes are grouped per partition as the SDK does.

    .venv/bin/python bench/prefill.py --bootstrap 127.0.0.1:9092 --events 1000000
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from connectors.kafka_io import create_topics, describe_topic  # noqa: E402
from connectors.paths import jar_dir  # noqa: E402
from streamlearn.generators import clicks  # noqa: E402
from streamlearn.publish import Publisher  # noqa: E402

__all__ = ["Prefilled", "prefill", "send_lines"]

_JAVA = """\
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class LinesProducer {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", args[0]);
        p.put("acks", "1");
        p.put("linger.ms", "20");
        p.put("batch.size", Integer.toString(1 << 20));
        p.put("buffer.memory", Long.toString(256L << 20));
        AtomicLong failed = new AtomicLong();
        AtomicReference<Exception> first = new AtomicReference<>();
        long sent = 0;
        BufferedReader in = new BufferedReader(
            new InputStreamReader(System.in, StandardCharsets.UTF_8), 1 << 20);
        try (KafkaProducer<byte[], byte[]> producer =
                new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer())) {
            String line;
            while ((line = in.readLine()) != null) {
                int tab = line.indexOf('\\t');
                byte[] key = line.substring(0, tab).getBytes(StandardCharsets.UTF_8);
                byte[] value = line.substring(tab + 1).getBytes(StandardCharsets.UTF_8);
                producer.send(new ProducerRecord<>(args[1], key, value), (meta, exc) -> {
                    if (exc != null) { failed.incrementAndGet(); first.compareAndSet(null, exc); }
                });
                sent++;
            }
            producer.flush();
        }
        System.out.println("sent " + sent + " failed " + failed.get());
        if (first.get() != null) { System.err.println(first.get()); System.exit(1); }
    }
}
"""


@dataclass(frozen=True)
class Prefilled:
    """What :func:`prefill` wrote and how long it took."""

    events: int
    single_topic: str | None
    single_messages: int
    envelope_topic: str
    envelope_messages: int
    envelope_size: int
    seconds: float
    #: events per partition of the envelope topic, as its publisher placed them
    partition_events: list[int] | None = None

    def to_json(self) -> dict:
        return asdict(self)


def prefill(
    bootstrap: str,
    events: int,
    single_topic: str | None = "e2e-single",
    envelope_topic: str = "e2e-envelopes",
    envelope_size: int = 500,
    partitions: int = 4,
    seed: int = 7,
    stream: Iterable[dict] | None = None,
    publisher_options: dict | None = None,
) -> Prefilled:
    """Fill ``single_topic`` and ``envelope_topic`` with the same ``events`` clicks events.

    ``stream``: the events to publish instead of ``clicks(events, seed=seed)`` (its
    first ``events``; e.g. ``clicks(..., keys=zipf_keys())``). ``single_topic=None``
    fills only the envelope topic. ``publisher_options``: more arguments of the
    envelopes' :class:`~streamlearn.publish.Publisher` (``{"spread_hot_keys": 0.01}``).
    """
    options = publisher_options or {}
    if single_topic is None:
        return _prefill_envelopes(bootstrap, events, envelope_topic, envelope_size, partitions,
                                  seed, stream, options)
    create_topics(bootstrap, {single_topic: partitions, envelope_topic: partitions})
    t0 = time.perf_counter()
    publisher = Publisher(
        bootstrap, envelope_topic, envelope=True, envelope_size=envelope_size, **options
    )
    try:

        def lines() -> Iterator[bytes]:
            for event in _events(events, seed, stream):
                publisher.publish(event)
                yield b"%s\t%s\n" % (event["key"].encode(), orjson.dumps(event))

        send_lines(bootstrap, single_topic, lines())
        publisher.flush()
        placed = list(publisher.partition_events)
    finally:
        publisher.close()
    seconds = time.perf_counter() - t0
    single = describe_topic(bootstrap, single_topic).messages
    if single != events:
        raise RuntimeError(f"{single_topic} holds {single} messages, expected {events}")
    return Prefilled(
        events=events,
        single_topic=single_topic,
        single_messages=single,
        envelope_topic=envelope_topic,
        envelope_messages=describe_topic(bootstrap, envelope_topic).messages,
        envelope_size=envelope_size,
        seconds=round(seconds, 2),
        partition_events=placed,
    )


def send_lines(bootstrap: str, topic: str, lines: Iterable[bytes]) -> None:
    """Send ``key<TAB>value\\n`` lines to ``topic`` with the official Java client (each
    value keyed by its key; Kafka's default partitioner)."""
    with tempfile.TemporaryDirectory(prefix="prefill-") as tmp:
        source = Path(tmp) / "LinesProducer.java"
        source.write_text(_JAVA)
        log_path = Path(tmp) / "producer.log"
        with log_path.open("wb") as log:
            java = subprocess.Popen(
                ["java", "-cp", f"{jar_dir('kafka')}/*", str(source), bootstrap, topic],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
            )
            assert java.stdin is not None
            try:
                chunk = []
                for line in lines:
                    chunk.append(line)
                    if len(chunk) == 4096:
                        java.stdin.write(b"".join(chunk))
                        chunk = []
                java.stdin.write(b"".join(chunk))
            finally:
                java.stdin.close()
                java.wait(timeout=300)
        if java.returncode != 0:
            raise RuntimeError(f"the Java producer failed: {log_path.read_text()[-2000:]}")


def _events(events: int, seed: int, stream: Iterable[dict] | None) -> Iterator[dict]:
    return clicks(events, seed=seed) if stream is None else islice(stream, events)


def _prefill_envelopes(
    bootstrap: str,
    events: int,
    envelope_topic: str,
    envelope_size: int,
    partitions: int,
    seed: int,
    stream: Iterable[dict] | None,
    options: dict,
) -> Prefilled:
    """:func:`prefill` of the envelope topic alone."""
    create_topics(bootstrap, {envelope_topic: partitions})
    t0 = time.perf_counter()
    with Publisher(bootstrap, envelope_topic, envelope=True, envelope_size=envelope_size,
                   **options) as pub:
        n = pub.publish_many(_events(events, seed, stream))
        placed = list(pub.partition_events)
    if n != events:
        raise RuntimeError(f"the stream ended after {n} events, {events} were asked for")
    return Prefilled(
        events=events,
        single_topic=None,
        single_messages=0,
        envelope_topic=envelope_topic,
        envelope_messages=describe_topic(bootstrap, envelope_topic).messages,
        envelope_size=envelope_size,
        seconds=round(time.perf_counter() - t0, 2),
        partition_events=placed,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--envelope-size", type=int, default=500)
    parser.add_argument("--single-topic", default="e2e-single")
    parser.add_argument("--envelope-topic", default="e2e-envelopes")
    args = parser.parse_args(argv)
    done = prefill(
        args.bootstrap,
        args.events,
        args.single_topic,
        args.envelope_topic,
        envelope_size=args.envelope_size,
    )
    print(orjson.dumps(done.to_json(), option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
