"""``streamlearn demo``: the loop end to end, with a live view and a report.

The command (this module: its flags and :func:`run`) and the orchestrator
beside it, which sits on top of the library and ``connectors`` as the rest of
the command line does:

- :mod:`~streamlearn.cli.demo.config`: what one run does (``DemoConfig``);
- :mod:`~streamlearn.cli.demo.services`: the broker, topics, training job and
  prediction server it starts, or reuses, and stops;
- :mod:`~streamlearn.cli.demo.stream`: the paced, drifting click stream;
- :mod:`~streamlearn.cli.demo.watch` and :mod:`~streamlearn.cli.demo.freshness`:
  the versions served, and freshness per message;
- :mod:`~streamlearn.cli.demo.display`: the live view, once a second;
- :mod:`~streamlearn.cli.demo.report` and :mod:`~streamlearn.cli.demo.plots`:
  the report's JSON figures and PNG plots (the plots need matplotlib, the
  ``demo`` extra; without it the report is written without them);
- :mod:`~streamlearn.cli.demo.runner`: :func:`~streamlearn.cli.demo.runner.run_demo`,
  which ties them together;
- :mod:`~streamlearn.cli.demo.delayed`: ``--delayed-labels``, the loop with labels
  that come later (serve → log → feedback → join → learn → serve).

Only this module is imported to build the command line: the rest loads when
the demo runs.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamlearn.cli.demo.config import DemoConfig
    from streamlearn.cli.demo.display import LiveDisplay

__all__ = ["register", "run"]

DESCRIPTION = """\
Run the whole loop end to end: start what is not running (a local Kafka
broker, the run's topics, the training job in the local Flink MiniCluster, the
prediction server), publish a drifting click stream at a steady rate, and show
live: events/s in and learned, prequential accuracy and log-loss, the serving
version and its age, dead letters, and freshness (Kafka append → first
prediction by a version that learned the event). At the end, or on Ctrl-C, it
stops what it started and writes a report directory: summary.json and other
JSON figures, metrics.png and freshness.png, and the services' logs.
"""

EPILOG = """\
examples:
  streamlearn demo                              90 s at 10,000 events/s, about two minutes in all
  streamlearn demo --duration 30 --rate 2000    a shorter, lighter run
  streamlearn demo --parallelism 4              four learners (and topic partitions)
  streamlearn demo --kafka-port 19092 --serve-port 8100 --report-dir /tmp/demo
  streamlearn demo --bootstrap kafka:9092       use an existing broker (never stopped)
  streamlearn demo --delayed-labels --rate 2000 --duration 60
                                                clicks that come later: served with an id and
                                                logged, clicked later, joined, learned, served

With --delayed-labels the users ask the prediction server, which logs what it
serves (streamlearn serve --log-topic); a click comes --mean-delay-ms later on
average on a labels topic (some after the window); the training job joins them
within --window-ms ([join]: an unclicked impression is learned as 0), learns,
and the server swaps each version in. The report (summary.json) has the join's
outcomes from the newest version's lineage and what was served, scored against
the clicks that came, per version (as streamlearn delays computes it).

A broker already answering on --kafka-port is reused and left running; one
the demo starts is stopped at the end. Each run uses fresh topics
(demo-<run id>) and a fresh model, so runs are independent. Reports go to
reports/demo-<timestamp>/ unless --report-dir says otherwise.
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="run the whole loop end to end with a live view, then write a report",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=90.0, metavar="SECONDS",
                        help="seconds of steady stream after the warm-up (default: %(default)s)")
    parser.add_argument("--rate", type=int, default=10_000, metavar="EVENTS_PER_S",
                        help="events published per second (default: %(default)s)")
    parser.add_argument("--parallelism", type=int, default=2, metavar="N",
                        help="parallel learners and topic partitions (default: %(default)s)")
    parser.add_argument("--kafka-port", type=int, default=9092, metavar="PORT",
                        help="local broker port: reused if running, else started "
                             "(default: %(default)s)")
    parser.add_argument("--bootstrap", metavar="HOST:PORT",
                        help="use this existing broker instead of a local one")
    parser.add_argument("--serve-port", type=int, default=8000, metavar="PORT",
                        help="prediction server port (default: %(default)s)")
    parser.add_argument("--report-dir", metavar="DIR",
                        help="where to write the report (default: reports/demo-<timestamp>)")
    parser.add_argument("--sync-ms", type=int, default=None, metavar="MS",
                        help="the job commits a version at most this often "
                             "(default: the training job's job.sync_ms)")
    parser.add_argument("--bits", type=int, default=None, metavar="N",
                        help="model size, 2^N hashed slots (default: the training job's, "
                             "features.bits)")
    parser.add_argument("--envelope-size", type=int, default=100, metavar="N",
                        help="events per Kafka message (default: %(default)s)")
    parser.add_argument("--bad-share", type=float, default=0.001, metavar="SHARE",
                        help="share of malformed events, for the dead-letter topic "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="stream seed (default: %(default)s)")
    parser.add_argument("--delayed-labels", action="store_true",
                        help="the loop with clicks that come later: serve, log, click, join, "
                             "learn (see below)")
    parser.add_argument("--window-ms", type=int, default=None, metavar="MS",
                        help="with --delayed-labels: a click counts this long after what was "
                             "served (default: 2000)")
    parser.add_argument("--mean-delay-ms", type=int, default=None, metavar="MS",
                        help="with --delayed-labels: the mean delay of a click, exponential "
                             "(default: 500)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import signal
    from pathlib import Path

    from streamlearn.cli.demo.config import DemoConfig
    from streamlearn.cli.demo.display import LiveDisplay
    from streamlearn.cli.demo.runner import run_demo
    from streamlearn.errors import ConfigError

    for flag, value in (("--window-ms", args.window_ms), ("--mean-delay-ms", args.mean_delay_ms)):
        if value is not None and not args.delayed_labels:
            raise ConfigError(flag, "only with --delayed-labels", value)
    delayed = {"delayed_labels": args.delayed_labels,
               **({} if args.window_ms is None else {"window_ms": args.window_ms}),
               **({} if args.mean_delay_ms is None else {"mean_delay_ms": args.mean_delay_ms})}
    cfg = DemoConfig(
        duration_s=args.duration, rate=args.rate, parallelism=args.parallelism,
        kafka_port=args.kafka_port, bootstrap=args.bootstrap, serve_port=args.serve_port,
        report_dir=Path(args.report_dir) if args.report_dir else None,
        envelope_size=args.envelope_size, bad_share=args.bad_share, seed=args.seed,
        **({} if args.bits is None else {"bits": args.bits}),
        **({} if args.sync_ms is None else {"sync_ms": args.sync_ms}),
        **delayed,
    )

    def _terminate(signum: int, frame: object) -> None:  # `kill` stops the run like Ctrl-C
        raise KeyboardInterrupt

    if not getattr(args, "verbose", False):  # the live view, not the Kafka client's chatter
        for noisy, level in (("kafka", logging.ERROR), ("httpx", logging.WARNING),
                             ("matplotlib", logging.WARNING)):
            logging.getLogger(noisy).setLevel(level)
    previous = signal.signal(signal.SIGTERM, _terminate)
    display = LiveDisplay()
    try:
        if cfg.delayed_labels:
            return _delayed(cfg, display)
        result = run_demo(cfg, display)
    finally:
        signal.signal(signal.SIGTERM, previous)
    s = result.summary
    fresh, metrics = s["freshness"], s["metrics"]
    final = metrics["after_warmup"] or metrics["final_cumulative"]
    lines = [
        f"rate      {s['stream']['rate_achieved']:,} events/s published "
        f"(target {cfg.rate:,}), {s['training']['learned_rate'] or 0:,.0f}/s learned, "
        f"{s['training']['versions_served']} versions served",
        f"freshness p50 {fresh['p50_ms']} ms, p95 {fresh['p95_ms']} ms, p99 {fresh['p99_ms']} ms "
        f"over {fresh['samples']:,} messages (goal p50 <= 1000, p99 <= 2000: "
        f"{'met' if fresh['goals_met'] else 'not met'})",
        "metrics   after warm-up: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items())
        + "  (chance: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics["chance"].items()) + ")",
        f"dead letters {s['training']['dlq_messages']}",
        f"report    {result.report_dir}  ("
        + ", ".join(["summary.json", *s["plots"]]) + ")",
    ]
    display.message("\n".join(lines))
    return 130 if result.interrupted else 0


def _delayed(cfg: DemoConfig, display: LiveDisplay) -> int:
    """``--delayed-labels``: run it, then its figures in a few lines."""
    from streamlearn.cli.demo.delayed import run_delayed

    result = run_delayed(cfg, display)
    s = result.summary
    users, training, quality = s["users"], s["training"], s["served_quality"]
    join = training["join"]
    by_version = quality["by_version"]
    first, last = (by_version[min(by_version, key=int)], by_version[max(by_version, key=int)]) \
        if by_version else (None, None)
    delay = quality["delay_ms"]
    lines = [
        f"served    {users['served']:,} events by the server ({users['self_logged']:,} logged "
        f"by the users before the first version), {users['clicks']:,} clicks",
        f"joined    version {training['version']}: {training['events_learned']:,} learned: "
        + ", ".join(f"{k} {v:,}" for k, v in join.items())
        + f"; {training['in_a_window']:,} still in their window",
        f"clicks    delay p50 {delay['p50']} ms, p99 {delay['p99']} ms; positives after the "
        f"window {quality['positives_after_window'] or 0:.1%}",
    ]
    if first is not None and last is not None:
        lines.append(f"served log-loss, first version {first['log_loss']:.4f} "
                     f"({first['events']:,} events), last {last['log_loss']:.4f} "
                     f"({last['events']:,}), over {len(by_version)} versions")
    lines.append(f"report    {result.report_dir}  (summary.json, timeline.txt, logs/)")
    display.message("\n".join(lines))
    return 130 if result.interrupted else 0
