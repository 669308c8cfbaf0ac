"""A job that only writes dead letters a topic refuses, restarting after each failure.

``python tests/refused_dead_letters_job.py BOOTSTRAP TOPIC COUNT SIZE``: ``COUNT``
records of ``SIZE`` bytes, from a fixed collection, through the jobs' dead-letter sink
(:func:`connectors.flink_kafka.dead_letter_sink`) to ``TOPIC``; a topic that takes none
of them fails the sink's task at every attempt, on a burst of failed sends, and the
restart strategy (fixed delay, no limit) starts it again. No Python operator: an
attempt takes a fraction of a second. Used by ``tests/test_dead_letters.py``.
"""

from __future__ import annotations

import sys

from connectors.flink_kafka import dead_letter_sink, stream_env

JOB_NAME = "streamlearn-refused-dead-letters"


def main(argv: list[str]) -> None:
    from pyflink.common import Types

    bootstrap, topic, count, size = argv[0], argv[1], int(argv[2]), int(argv[3])
    env = stream_env(
        parallelism=1,
        config={
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": str(2**31 - 1),
            "restart-strategy.fixed-delay.delay": "200 ms",
        },
        log_name="refused-dead-letters",
    )
    records = [f"{i:08d}".ljust(size, "x") for i in range(count)]
    env.from_collection(records, type_info=Types.STRING()).sink_to(
        dead_letter_sink(bootstrap, topic)
    ).name("dead-letters").uid("dead-letters")
    env.execute(JOB_NAME)


if __name__ == "__main__":
    main(sys.argv[1:])
