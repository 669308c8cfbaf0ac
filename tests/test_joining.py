"""The reference join of delayed labels (``streamlearn.joining``): every impression and
every label has exactly one outcome, the ones the rules give, on the delayed clicks
stream with duplicates and strangers added; and the delay-aware report of served
predictions."""

from __future__ import annotations

import math
import random

import pytest

from streamlearn.errors import ConfigError
from streamlearn.generators import delayed_clicks
from streamlearn.joining import delay_report, join

WINDOW_MS = 60_000


def _stream(n: int = 20_000, seed: int = 4) -> tuple[list[dict], list[dict]]:
    impressions, labels = [], []
    for kind, e in delayed_clicks(n, seed=seed, rate_per_s=200.0, mean_delay_s=30.0):
        (impressions if kind == "impression" else labels).append(e)
    return impressions, labels


def test_each_impression_and_each_label_has_exactly_one_outcome() -> None:
    impressions, clicks = _stream()
    rng = random.Random(1)
    served = {e["id"]: e["ts"] for e in impressions}
    twice = [{**lab, "label": 0, "ts": lab["ts"] + 1} for lab in rng.sample(clicks, 50)]
    strangers = [{"id": f"x{i}", "label": 1, "ts": 5} for i in range(20)]
    labels = clicks + twice + strangers
    rng.shuffle(labels)  # arrival order does not matter: event time does
    out = join(impressions, labels, window_ms=WINDOW_MS, default=0)
    learned = [e["id"] for e, _ in out.learned]
    assert sorted(learned) == sorted(served), "every impression learned once"
    in_time = {c["id"] for c in clicks if c["ts"] - served[c["id"]] <= WINDOW_MS}
    for event, how in out.learned:
        assert (event["label"], how) == ((1, "joined") if event["id"] in in_time
                                         else (0, "expired"))
    counts = out.counts()
    late = len(clicks) - len(in_time)
    assert counts == {"joined": len(in_time), "expired": len(served) - len(in_time),
                      "dropped": 0, "duplicate": sum(t["id"] in in_time for t in twice),
                      "late": late + sum(t["id"] not in in_time for t in twice),
                      "unmatched": 20, "impression_duplicate": 0}
    assert len(out.rejected) + len(in_time) == len(labels), "every label once"
    assert late / len(clicks) == pytest.approx(math.exp(-2), abs=0.03)
    dropped = join(impressions, labels, window_ms=WINDOW_MS, default=None)
    assert len(dropped.dropped) == counts["expired"] and dropped.counts()["expired"] == 0


def test_the_first_label_in_event_time_wins() -> None:
    impressions = [{"id": "a", "ts": 100}]
    labels = [{"id": "a", "label": 0, "ts": 180}, {"id": "a", "label": 1, "ts": 150}]
    out = join(impressions, labels, window_ms=100)
    assert [e["label"] for e, _ in out.learned] == [1]
    assert [(r["label"], why) for r, why in out.rejected] == [(0, "duplicate")]
    edge = join(impressions, [{"id": "a", "label": 1, "ts": 200}], window_ms=100)
    assert edge.counts()["joined"] == 1, "the window's last millisecond is in it"
    with pytest.raises(ConfigError, match="window_ms"):
        join(impressions, labels, window_ms=-1)


def test_the_delay_report_measures_the_label_each_impression_got() -> None:
    """With ``keep="last"`` the delay is the window's last label's; a label before its
    impression (unmatched) is never a delay."""
    preds = [{"id": "a", "ts": 100, "version": 1, "probabilities": [0.5, 0.5]},
             {"id": "b", "at_ms": 100, "version": 1, "probabilities": [0.5, 0.5]}]
    labels = [{"id": "a", "label": 1, "ts": 120}, {"id": "a", "label": 1, "ts": 170},
              {"id": "b", "label": 1, "ts": 90}, {"id": "b", "label": 1, "ts": 130}]
    first = delay_report(preds, labels, window_ms=100)
    last = delay_report(preds, labels, window_ms=100, keep="last")
    assert (first["delay_ms"]["p50"], first["delay_ms"]["p99"]) == (20, 30)
    assert (last["delay_ms"]["p50"], last["delay_ms"]["p99"]) == (30, 70)
    assert first["delay_ms"]["joined"] == last["delay_ms"]["joined"] == 2


def test_keep_last_takes_the_windows_last_label_and_rejects_the_others() -> None:
    impressions = [{"id": "a", "ts": 100}, {"id": "b", "ts": 100}]
    labels = [{"id": "a", "label": 0, "ts": 180}, {"id": "a", "label": 1, "ts": 150},
              {"id": "a", "label": 1, "ts": 201},  # after the window: late, never kept
              {"id": "b", "label": 1, "ts": 130}, {"id": "b", "label": 0, "ts": 130}]
    out = join(impressions, labels, window_ms=100, keep="last")
    assert [(e["id"], e["label"], how) for e, how in out.learned] == [
        ("a", 0, "joined"), ("b", 0, "joined")]  # b: equal times, the last given
    assert sorted((r["id"], r["ts"], r["label"], why) for r, why in out.rejected) == [
        ("a", 150, 1, "duplicate"), ("a", 201, 1, "late"), ("b", 130, 1, "duplicate")]
    first = join(impressions, labels, window_ms=100)
    assert [e["label"] for e, _ in first.learned] == [1, 1]
    with pytest.raises(ConfigError, match="keep"):
        join(impressions, labels, window_ms=100, keep="middle")


def test_unmatched_is_no_impression_at_or_before_the_label_nor_remembered() -> None:
    impressions = [{"id": "a", "ts": 100}, {"id": "b", "at_ms": 100}, {"id": "a", "ts": 120}]
    labels = [
        {"id": "a", "label": 1, "ts": 99},  # before its impression
        {"id": "b", "label": 1, "ts": 150},  # the prediction log's time joins it
        {"id": "a", "label": 1, "ts": 260},  # past the window, remembered: late
        {"id": "a", "label": 1, "ts": 301},  # past the window and the memory
    ]
    out = join(impressions, labels, window_ms=100, remember_ms=100)
    assert [(e["id"], how) for e, how in out.learned] == [("a", "expired"), ("b", "joined")]
    assert [(r["id"], r["ts"], why) for r, why in out.rejected] == [
        ("a", 120, "impression_duplicate"), ("a", 99, "unmatched"), ("a", 260, "late"),
        ("a", 301, "unmatched"),
    ]
    forever = join(impressions, labels, window_ms=100)
    assert [why for _, why in forever.rejected][-1] == "late"
    with pytest.raises(ConfigError, match="remember_ms"):
        join(impressions, labels, window_ms=1, remember_ms=-1)


def test_delay_report_scores_what_was_served_per_version() -> None:
    impressions, clicks = _stream(4_000, seed=9)
    rng = random.Random(2)
    logged = [{"id": e["id"], "ts": e["ts"], "version": 1 + i % 3,
               "probabilities": [1 - (p := rng.uniform(0.05, 0.95)), p]}
              for i, e in enumerate(impressions)]
    report = delay_report(logged, clicks, window_ms=WINDOW_MS)
    clicked = {c["id"]: c for c in clicks}
    for version, got in report["by_version"].items():
        mine = [r for r in logged if r["version"] == version]
        losses = [-math.log(r["probabilities"][1] if r["id"] in clicked and
                            clicked[r["id"]]["ts"] - r["ts"] <= WINDOW_MS
                            else r["probabilities"][0]) for r in mine]
        assert got["events"] == len(mine)
        assert got["log_loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-12)
    delays = sorted(c["ts"] - r["ts"] for r in logged for c in [clicked.get(r["id"])]
                    if c is not None and c["ts"] - r["ts"] <= WINDOW_MS)
    assert report["delay_ms"]["joined"] == len(delays)
    assert report["delay_ms"]["p50"] == delays[math.ceil(0.5 * len(delays)) - 1]
    late = sum(c["ts"] - logged[int(c["id"][1:])]["ts"] > WINDOW_MS for c in clicks)
    assert report["positives_after_window"] == late / len(clicks)


def test_the_join_corpus_is_what_the_reference_gives() -> None:
    """The JVM's join replays ``streamlearn/joining_corpus.jsonl`` (JoinCorpusTest, by
    Maven); the file must be the reference's reading of its cases."""
    from streamlearn import joining_corpus

    assert joining_corpus.main([]) == 0, "stale: python -m streamlearn.joining_corpus --write"
    cases = joining_corpus.generate()
    seen = {how for c in cases for *_, how in c["learned"]}
    seen |= {row[3] for c in cases for row in c["rejected"]}
    seen |= {"dropped"} if any(c["dropped"] for c in cases) else set()
    assert seen == {"joined", "expired", "dropped", "duplicate", "late", "unmatched",
                    "impression_duplicate"}


@pytest.mark.parametrize(("join", "field"), [
    ({"impressions": "imp"}, "join.labels"),
    ({"impressions": "events", "labels": "lab"}, "join.impressions"),
    ({"impressions": "imp", "labels": "imp"}, "join.labels"),
    ({"impressions": "imp", "labels": "lab", "default": "yes"}, "join.default"),
    ({"impressions": "imp", "labels": "lab", "window_ms": -1}, "join.window_ms"),
    ({"impressions": "imp", "labels": "lab", "expire": "never"}, "join.expire"),
    ({"impressions": "imp", "labels": "lab", "keep": "middle"}, "join.keep"),
])
def test_the_join_section_is_checked_before_the_job_starts(join: dict, field: str) -> None:
    from streamlearn.training.config import TrainConfig

    with pytest.raises(ConfigError, match=f"`{field}`"):
        TrainConfig.from_dict({"kafka": {"topic": "events"}, "join": join})
    ok = TrainConfig.from_dict({"join": {"impressions": "imp", "labels": "lab",
                                         "default": "yes"}, "model": {"task": "multiclass"}})
    assert ok.join.on and ok.join.default == "yes"
    with pytest.raises(ConfigError, match="`job.bounded`"):
        TrainConfig.from_dict({"join": {"impressions": "i", "labels": "l"},
                               "job": {"bounded": True}})
    assert not TrainConfig.from_dict({}).join.on
