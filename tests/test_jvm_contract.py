"""The JVM encoder's copy of the event contract is the contract's, string for string.

``io.streamlearn.flink.ContractRules`` holds every rejection code with its field, expected
and got templates, the limits and the hashing's constants (``FeatureHash`` hashes with
them); ``Rules`` renders a rejection's text from them in one place. The conformance corpus
replay (``jvm/src/test/java/.../CorpusReplayTest.java``, run by Maven) checks the texts of
the corpus's cases; this test checks the whole table at once against
:mod:`streamlearn.contract`, so that a rule added, removed or reworded there and not in the
JVM fails here, whether or not the corpus has a case that shows it.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

import orjson

from streamlearn.contract import (
    CROSS_LIMIT,
    EVENT_FIELDS,
    HASH,
    LABEL_EXPECTED,
    MAX_BITS,
    MAX_FEATURES,
    RULES,
    TASKS,
)
from tests import jvm_tool


def _jvm_rules() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "rules.json")
        jvm_tool.run(["--rules", "--out", str(out)], b"")
        return orjson.loads(out.read_bytes())


def test_the_joins_outcome_header_is_the_references() -> None:
    """The join writes each outcome in a header the learners read (the JVM encoder, and
    Python when a restored learner reads messages again): one name, one set of outcomes."""
    from streamlearn.joining import HEADER, OUTCOMES

    jvm = _jvm_rules()["join"]
    assert jvm["header"] == HEADER
    assert tuple(jvm["outcomes"]) == OUTCOMES


def test_jvm_rules_are_the_contracts() -> None:
    jvm = _jvm_rules()
    assert jvm["max_features"] == MAX_FEATURES
    assert jvm["max_bits"] == MAX_BITS
    hashing = {k: v.decode() if type(v) is bytes else v for k, v in asdict(HASH).items()}
    assert jvm["hash"] == hashing
    assert jvm["cross_limit"] == CROSS_LIMIT
    assert tuple(jvm["tasks"]) == TASKS
    assert tuple(jvm["event_fields"]) == EVENT_FIELDS
    assert jvm["label_expected"] == LABEL_EXPECTED
    contract = {code: [r.field, r.expected, r.got] for code, r in RULES.items()}
    assert sorted(jvm["rules"]) == sorted(contract)
    for code, templates in contract.items():
        assert jvm["rules"][code] == templates, code
