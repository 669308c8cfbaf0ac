"""The lines ``streamlearn train`` prints for the versions it sees, without a job or a broker."""

from __future__ import annotations

import io

import numpy as np

from streamlearn.cli.train_foreground import _show_new
from streamlearn.state import ModelState
from streamlearn.store import Changes, Lineage, ModelStore
from streamlearn.training.config import TrainConfig


class _Follower:
    """Stands in for the Kafka follower: no lag, no newest event."""

    def lag(self, offsets: dict[int, int]) -> int:
        return 0

    def newest_event_ms(self, offsets: dict[int, int]) -> None:
        return None


def test_a_compaction_is_one_line_naming_the_version_it_stores_whole(tmp_path):
    store = ModelStore(str(tmp_path / "models"), "m")
    state = ModelState({"weights": np.zeros(8), "intercept": np.zeros(1)}, {"n_slots": 8})
    store.commit(state, Lineage(events=100))
    state.arrays["weights"][3] = 0.5
    store.commit_delta(Changes.gather(state, [3]), Lineage(events=250), parent=1)
    store.compact()
    out = io.StringIO()
    shown, prev, _ = _show_new(store, TrainConfig.from_dict({}), 0, None, _Follower(), out)
    lines = out.getvalue().splitlines()
    assert shown == 3 and prev.version == 2
    assert lines[0].startswith("version 1: 100 events") and lines[1].startswith("version 2: 250")
    assert lines[2] == "version 3: version 2 stored whole (a compaction)"


def test_without_kafka_the_lines_come_without_lag_and_age(tmp_path):
    """The last look, after Ctrl-C stopped the job, asks Kafka nothing: the follower may
    be what was interrupted."""

    class _Refuses(_Follower):
        def lag(self, offsets: dict[int, int]) -> int:
            raise AssertionError("Kafka asked")

    store = ModelStore(str(tmp_path / "models"), "m")
    state = ModelState({"weights": np.zeros(8), "intercept": np.zeros(1)}, {"n_slots": 8})
    store.commit(state, Lineage(events=100))
    out = io.StringIO()
    shown, _, _ = _show_new(store, TrainConfig.from_dict({}), 0, None, _Refuses(), out,
                            kafka=False)
    assert shown == 1 and out.getvalue() == "version 1: 100 events\n"
