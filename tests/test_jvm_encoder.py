"""The JVM encoder agrees exactly with the Python reference.

``io.streamlearn.flink.EventEncoder`` decodes, validates and hashes events in
the training job's JVM. Its results must be those of ``EventDecoder(task)
.decode(message)`` followed by ``FeatureHasher(bits, dense).encode_one`` per
valid event: the same rows, slots, signed values (bit for bit), numeric flags,
offsets and labels, and the same rejections (field, index, reason), each
written as the same bounded dead-letter record. One refusal the Python hasher
would raise for a whole batch is a rejection of the one event in the JVM (see
``reference`` below); the detail inside "bad JSON (...)" is the parser's own.

Each test runs the encoder's command-line tool (``EncodeTool``) once over many
messages: a hand-written corpus of message kinds and a seeded random stream.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import struct

import numpy as np
import orjson
import pytest

from streamlearn.contract import event_weight
from streamlearn.errors import EventError, ValidationError
from streamlearn.events import (
    DEAD_LETTER_FIELD_CHARS,
    DEAD_LETTER_MAX_BYTES,
    DEAD_LETTER_REASON_CHARS,
    DEAD_LETTER_VALUE_BYTES,
    EventDecoder,
    _item_bytes,
    _short,
    dead_letter,
)
from streamlearn.features import FeatureHasher, _hash_name, _hash_value, feature_slot
from streamlearn.training.encoded_batch import read_encoded_batch
from tests import jvm_tool

TASKS = ("regression", "binary", "multiclass")
BITS = 20
DENSE = ("age", "score")
MAX_FEATURES = 8
BAD_JSON = "field `message`: expected a JSON object (an event or an envelope), got bad JSON ("
DLQ = ("events", 3, 42, 1_700_000_000_000)

# -- the reference ------------------------------------------------------------------------


def _where(index: int | None) -> str:
    return "" if index is None else f"event {index}"


def _hasher_refusal(features: dict, dense: tuple[str, ...], index: int | None) -> EventError | None:
    """What the JVM refuses per event that ``FeatureHasher`` would refuse only when encoding
    a whole batch: a dense feature given a string or a non-empty list (the hasher takes
    true/false there as 1/0, and an empty list as no entry). An empty feature name is
    refused by the decoder itself, in both."""
    for name, value in features.items():
        if name in dense and (type(value) is str or (type(value) is list and value)):
            return EventError(
                f"features.{name}", "a number (it is a dense feature)", _short(value),
                _where(index),
            )
    return None


def reference(message: bytes, task: str, bits: int, dense: tuple[str, ...], max_features: int):
    """Python's result for one message: rows (indices, values, numeric, label, weight) and
    rejections (field, index, reason), in the JVM's order."""
    decoder = EventDecoder(task, max_features=max_features)
    hasher = FeatureHasher(bits, dense)
    good, bad = decoder.decode(message)
    try:
        doc = orjson.loads(message)
    except orjson.JSONDecodeError:
        doc = None
    envelope = isinstance(doc, dict) and "events" in doc and "features" not in doc
    if envelope and isinstance(doc["events"], list):
        failed = {r.index for r in bad}
        good_index = [i for i in range(len(doc["events"])) if i not in failed]
    else:
        good_index = [None] * len(good)
    rows, rejections = [], [(r.field, r.index, r.reason) for r in bad]
    for index, event in zip(good_index, good, strict=True):
        refusal = _hasher_refusal(event["features"], dense, index)
        if refusal is not None:
            with pytest.raises(ValidationError):  # the JVM refuses only what Python refuses
                hasher.encode_one(event["features"])
            rejections.append((refusal.field, index, str(refusal)))
            continue
        b = hasher.encode_one(event["features"])
        rows.append((b.indices, b.values, b.numeric, event["label"], event_weight(event)))
    rejections.sort(key=lambda r: -1 if r[1] is None else r[1])
    return rows, rejections


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool((a.view(np.int64) == b.view(np.int64)).all())


def check_message(
    message: bytes, task: str, batch_bytes: bytes, rejections: list[dict],
    bits: int = BITS, dense: tuple[str, ...] = DENSE, max_features: int = MAX_FEATURES,
) -> None:
    """The JVM's result for one message equals the reference, or fail naming the message."""
    rows, expected_rej = reference(message, task, bits, dense, max_features)
    batch, labels, weights = read_encoded_batch(batch_bytes, (1 << bits) + len(dense))
    where = f"task {task}, message {message[:200]!r}"
    assert batch.n_rows == len(rows), where
    assert len(labels) == len(rows), where
    # weights only where some event weighs other than 1 (a batch without carries none)
    assert (weights is None) == all(r[4] == 1.0 for r in rows), (where, weights)
    if weights is not None:
        assert _same_bits(weights, np.array([r[4] for r in rows])), (where, weights)
    for r, (indices, values, numeric, label, _) in enumerate(rows):
        lo, hi = batch.offsets[r], batch.offsets[r + 1]
        assert batch.indices[lo:hi].tolist() == indices.tolist(), where
        assert _same_bits(batch.values[lo:hi], values), (where, batch.values[lo:hi], values)
        assert batch.numeric[lo:hi].tolist() == numeric.tolist(), where
        got = labels[r]
        if task == "multiclass":
            assert type(got) is type(label) and got == label, (where, got, label)
        else:
            assert _same_bits(np.array([got]), np.array([float(label)])), (where, got, label)
    got_rej = [(r["field"], r["index"], r["reason"]) for r in rejections]
    assert len(got_rej) == len(expected_rej), (where, got_rej, expected_rej)
    for got, exp in zip(got_rej, expected_rej, strict=True):
        if exp[0] == "message" and exp[2].startswith(BAD_JSON):
            assert got[:2] == exp[:2] and got[2].startswith(BAD_JSON), (where, got, exp)
        else:
            assert got == exp, where
    for r in rejections:  # the raw bytes: the message, or the envelope item as sent
        if r["index"] is None:
            assert r["raw"] == message, where
        else:
            item = orjson.loads(message)["events"][r["index"]]  # as bytes: it may nest deep
            assert _item_bytes(orjson.loads(r["raw"])) == _item_bytes(item), where


# -- the hand-written corpus -------------------------------------------------------------------

LONG = "x" * 100
CORPUS: list[bytes] = [
    # good single events
    b'{"features": {"x": 1.5, "country": "FR", "tags": ["a", "b"], "vip": true}, "label": 1}',
    b'{"key": "user-42", "features": {"age": 31, "country": "FR"}, "label": 1,'
    b' "ts": 1732345678123, "id": "e-1"}',
    b'{"label": 0, "id": 7, "features": {"n": -2, "score": 0.25}}',
    b' \n\t{ "features" : { "a" : 1 , "b" : [ "x" , "y" ] } , "label" : false }\r\n',
    '{"features": {"ville": "Zürich", "名前": "東京", "emoji": "😀", "é": 2.5},'
    ' "label": 1}'.encode(),
    b'{"features": {"a\\"b": "c\\nd", "t\\u00e9": "\\u00e9", "pair": "\\ud83d\\ude00",'
    b' "sl\\/ash": "\\/\\b\\f\\r\\t\\\\"}, "label": 1}',
    b'{"features": {"x": 1, "y": "a", "x": "b"}, "label": 1}',
    b'{"features": {"x": 1}, "label": 0, "label": 1}',
    b'{"features": {"x": 1}, "features": {"y": 2, "z": "q"}, "label": 1}',
    b'{"features": {"tags": [], "x": 1}, "label": 1}',
    b'{"features": {"tags": []}, "label": 1}',
    b'{"features": {"i": 3, "f": 3.0, "z": 0, "nz": -0, "fz": -0.0, "e": 1e5, "E": 2.5E-3,'
    b' "big": 9007199254740993}, "label": 1}',
    b'{"features": {"u64": 18446744073709551615, "over": 18446744073709551616,'
    b' "neg": -9223372036854775808, "negover": -9223372036854775809}, "label": 1}',
    b'{"features": {"long": 123456789012345678901234567890, "tiny": 1e-400,'
    b' "maxish": 1.7976931348623157e308, "sub": 5e-324}, "label": 1}',
    b'{"features": {"a": 0.12345678901234567, "b": -0.7324123456789012, "c": 1234567.8901234567,'
    b' "d": 2.2250738585072014e-308, "f": 0.1000000000000000055511151231257827}, "label": 1}',
    b'{"features": {"g": 0.' + b"3" * 400 + b', "h": 1' + b"0" * 300 + b'}, "label": 1}',
    b'{"features": {"b": false, "c": true, "s": ""}, "label": 1}',
    b'{"key": true, "id": false, "features": {"x": 1}, "label": 1}',
    b'{"key": null, "ts": null, "id": null, "features": {"x": 1}, "label": 1}',
    b'{"key": 5, "id": 18446744073709551615, "ts": 0, "features": {"x": 1}, "label": 1}',
    b'{"features": {"x": 1}, "label": 1, "ts": -0}',
    b'{"features": {"x": "' + b"v" * 100_000 + b'"}, "label": 1}',
    b'{"features": {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8}, "label": 1}',
    b'{"features": {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8, "a": 9},'
    b' "label": 1}',
    # every label kind, for every task
    *[b'{"features": {"x": 1}, "label": ' + label + b"}" for label in (
        b"true", b"false", b"0", b"1", b"1.0", b"0.0", b"-0.0", b"-0", b"1e0", b"0E5", b"2",
        b"0.5", b'"cat"', b'""', b"null", b"[1]", b'{"a": 1}', b"18446744073709551615",
        b"18446744073709551616", b"1e5", b"-3", b'"1"', b'"it\'s"', b'"say \\"hi\\" it\'s"',
        b'"a\\u0001b\\u007f\\u00a0\\u2028\\u00e9\\ud83d\\ude00"', b'"' + LONG.encode() + b'"',
        b"123456789012345678901234567890", b"0.1",
    )],
    # rejections, in the order events.py checks
    b"5", b'"x"', b"[1, 2]", b"null", b"true", b"-0.0", b'[{"features": {"x": 1}, "label": 1}]',
    b'{"features": {"x": 1}, "label": 1, "zeta": 1, "alpha": 2}',
    '{"features": {"x": 1}, "label": 1, "\\uffff": 1, "😀": 2}'.encode(),
    b'{"events": [], "features": {"x": 1}, "label": 1}',
    b'{"label": 1}', b'{"features": null, "label": 1}', b'{"features": [1, 2], "label": 1}',
    b'{"features": "abc"}', b"{}", b'{"features": {}, "label": 1}',
    b'{"features": {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8, "i": 9},'
    b' "label": 1}',
    b'{"features": {"x": null}, "label": 1}', b'{"features": {"x": {"a": 1}}, "label": 1}',
    b'{"features": {"x": ["a", 1]}, "label": 1}', b'{"features": {"x": ["a", null]}, "label": 1}',
    b'{"features": {"x": ["a", ["b"]]}, "label": 1}',
    b'{"features": {"x": {"a": "' + LONG.encode() + b'"}}, "label": 1}',
    b'{"features": {"x": [' + b", ".join(b"%d" % i for i in range(40)) + b"]}, \"label\": 1}",
    b'{"features": {"x": 1}}',
    b'{"features": {"x": 1}, "label": 1, "key": 1.5}',
    b'{"features": {"x": 1}, "label": 1, "key": ["k"]}',
    b'{"features": {"x": 1}, "label": 1, "key": {"k": 1}}',
    *[b'{"features": {"x": 1}, "label": 1, "ts": ' + ts + b"}" for ts in (
        b"-1", b"1.5", b'"now"', b"true", b"18446744073709551616", b"1e3", b"18446744073709551615",
    )],
    b'{"features": {"x": 1}, "label": 1, "id": [1]}',
    b'{"features": {"x": 1}, "label": 1, "id": 2.5}',
    *[b'{"features": {"x": 1}, "label": 1, "weight": ' + w + b"}" for w in (
        b"-1", b"-0", b"-0.0", b"0", b"2.5", b"1e308", b"1e309", b'"2"', b"false",
        b"18446744073709551615", b"1.7976931348623157e308", b"-1e-300", b"null",
    )],
    b'{"features": {"x": 1}, "label": 7, "ts": -1}',
    b'{"features": {"x": null}, "label": 7}',
    b'{"zz": 1, "features": 5}',
    b'{"features": {"x": 1}, "label": 1, "ts": -5, "key": 1.5, "id": 2.5}',
    # dense features, and the hasher's refusals
    b'{"features": {"age": 31, "score": 0.5, "c": "x"}, "label": 1}',
    b'{"features": {"c": "x", "score": -0.0, "age": -7}, "label": 1}',
    b'{"features": {"age": "old"}, "label": 1}',
    b'{"features": {"age": true}, "label": 1}',
    b'{"features": {"age": ["a"]}, "label": 1}',
    b'{"features": {"age": []}, "label": 1}',
    b'{"features": {"age": null}, "label": 1}',
    b'{"features": {"age": false, "c": "x", "score": true}, "label": 1}',
    b'{"features": {"c": "x", "age": [ ], "score": 2}, "label": 1}',
    b'{"features": {"age": [], "score": false}, "label": 0}',
    b'{"features": {"score": ["a", "b"]}, "label": 1}',
    b'{"features": {"score": [""]}, "label": 1}',
    b'{"events": [{"features": {"age": true, "score": []}, "label": 1},'
    b' {"features": {"age": false, "score": 0.5}, "label": 0},'
    b' {"features": {"age": 3, "score": ["x"]}, "label": 1}]}',
    # an empty feature name: refused by both, in feature order, before its value is looked at
    b'{"features": {"": 1}, "label": 1}',
    b'{"features": {"x": 1, "": "y"}, "label": 1}',
    b'{"features": {"age": "x", "": 1}, "label": 1}',
    b'{"features": {"": null}, "label": 1}',
    b'{"features": {"x": null, "": 1}, "label": 1}',
    b'{"features": {"": 1}}',
    b'{"features": {"\\u0000": 1, "": 2}, "label": "yes"}',
    b'{"events": [{"features": {"x": 1}, "label": 1}, {"features": {"": 1}, "label": 1}]}',
    # envelopes
    b'{"events": [{"features": {"x": 1}, "label": 1}, {"features": {"y": "a"}, "label": 0}]}',
    # an envelope without events: a counted rejection of the message in both
    b'{"events": []}',
    b'{ "events" : [ ] }',
    b'{"events": [], "meta": 1}',
    b'{"meta": 1, "events": []}',
    b'{"events": [], "events": [{"features": {"x": 1}, "label": 1}]}',
    b'{"events": [{"features": {"x": 1}, "label": 1}], "events": []}',
    b'{"events": [{"features": {"x": 1}}, 5, {"features": {"a": ["u", "v"]}, "label": 0},'
    b' {"features": {}, "label": 1}, {"features": {"age": "x"}, "label": 1}, null,'
    b' {"features": {"x": 2}, "label": 1, "ts": -1}]}',
    b'{"events": {"a": 1}}', b'{"events": null}', b'{"events": "x"}',
    b'{"events": ' + b"[" + b", ".join(b"%d" % i for i in range(30)) + b"]" + b', "more": 1}',
    b'{"events": [{"features": {"x": 1}, "label": 1}], "meta": 1}',
    b'{"meta": {"a": [1]}, "events": [{"features": {"x": 1}, "label": 1}]}',
    b'{"events": [{"features": {"x": 1}, "label": 1}],'
    b' "events": [{"features": {"y": 1}, "label": 1}]}',
    b'{"events": [{"features": {"x": 1}, "label": 1}], "events": 5}',
    b'{"events": [{"events": []}, {"features": {"x": 1}, "label": 1}]}',
    b'{ "events" : [ { "features" : { "x" : 1 } , "label" : 1 } ,\n\t'
    b'{"features": {"x\\u00e9": "\\n"},'
    b' "label": 0} , [ "a" ] , { "features" : { "x" : 1 , "x" : 2 } , "label" : 1 } ] }',
    b'{"events": [{"features": {"x": 1}, "label": 1, "key": "\\ud83d\\ude00", "id": "\\u00e9"},'
    b' {"features": {"x": 1}, "label": "' + LONG.encode() + b'"}]}',
    b'{"events": [' + b", ".join([b'{"features": {"c%d": "v%d", "n": %d.5}, "label": %d}' % (
        i, i % 7, i, i % 2) for i in range(600)]) + b"]}",
    # bad JSON, including in places the events never look at
    b"", b" ", b"{", b"}", b'{"features": {"x": 1}, "label": 1',
    b'{"features": {"x": 1}, "label": 1} x', b'{"a": 1}{"b": 2}', b'{"a": 1} {"b": 2}',
    b'{"features": {"x": NaN}, "label": 1}', b'{"features": {"x": Infinity}, "label": 1}',
    b'{"features": {"x": -Infinity}, "label": 1}', b'{"features": {"x": 1e400}, "label": 1}',
    b'{"features": {"x": 1}, "label": 1, "id": 1e400}',
    b'{"features": {"x": 1}, "label": 1, "zz": -1e400}',
    b'{"features": {"x": 1' + b"0" * 400 + b"}, \"label\": 1}",
    b'{"features": {"x": 1}, "label": 1, "id": 1.7976931348623159e308}',
    b"\xff", b'{"features": {"x": "\xff"}, "label": 1}',
    b'{"features": {"x": "\xc0\x80"}, "label": 1}',
    b'{"features": {"x": "\xed\xa0\x80"}, "label": 1}',
    b'{"features": {"x": "\xf4\x90\x80\x80"}, "label": 1}',
    b'{"features": {"x": "\xe2\x82"}, "label": 1}',
    b'\xef\xbb\xbf{"features": {"x": 1}, "label": 1}',
    b'{"features": {"x": "\\ud800"}, "label": 1}', b'{"features": {"x": "\\udc00"}, "label": 1}',
    b'{"features": {"x": "\\ude00\\ud83d"}, "label": 1}',
    b'{"features": {"x": 1}, "label": 1, "id": "\\ud800x"}',
    b'{"features": {"\\ud800": 1}, "label": 1}',
    b'{"features": {"x": 1,}, "label": 1}', b'{"features": {"x": 01}, "label": 1}',
    b'{"features": {"x": 1.}, "label": 1}', b'{"features": {"x": .5}, "label": 1}',
    b'{"features": {"x": +1}, "label": 1}', b'{"features": {"x": -}, "label": 1}',
    b'{"features": {"x": 1e}, "label": 1}', b'{"features": {"x": 1e+}, "label": 1}',
    b"{'features': {'x': 1}, 'label': 1}", b'{"features": {"x": "a\tb"}, "label": 1}',
    b'{"features": {"x": "a\x01b"}, "label": 1}', b'{"features": {"x": "\\x"}, "label": 1}',
    b'{"features": {"x": "\\u00g0"}, "label": 1}', b'{"features": {"x": TRUE}, "label": 1}',
    b'{"features": {"x": tru}, "label": 1}', b'{"features": {"x": nul}, "label": 1}',
    b'\x00{"features": {"x": 1}, "label": 1}', b'{"features": {"x": 1}, "label": 1}\x00',
    b'{"features": {"x": 1}, "label": 1}\x0c', b'\x0c{"features": {"x": 1}, "label": 1}',
    b'{"features" {"x": 1}, "label": 1}', b'{"features": {"x": 1} "label": 1}',
    # orjson's depth limit: 1024 levels, the message's own included
    b'{"features": {"x": 1}, "label": 1, "zz": ' + b"[" * 1023 + b"]" * 1023 + b"}",
    b'{"features": {"x": 1}, "label": 1, "zz": ' + b"[" * 1024 + b"]" * 1024 + b"}",
    b'{"features": {"x": 1}, "label": 1, "id": ' + b"[" * 1024 + b"]" * 1024 + b"}",
    # values nested that deep, far past Python's recursion limit: quoted by their first brackets
    *[b'{"features": {"x": 1}, "label": 1, "' + field + b'": ' + b"[" * 1023 + b"]" * 1023
      + b"}" for field in (b"id", b"key", b"ts")],
    b'{"features": {"x": 1}, "label": ' + b"[" * 1023 + b"]" * 1023 + b"}",
    b'{"features": {"x": ' + b'{"a": ' * 1022 + b"1" + b"}" * 1022 + b'}, "label": 1}',
    b'{"features": {"x": ["a", ' + b"[" * 1021 + b"]" * 1021 + b']}, "label": 1}',
    b'{"features": ' + b"[" * 1023 + b"]" * 1023 + b', "label": 1}',
    b"[" * 1024 + b"]" * 1024,
    b'{"events": ' + b'{"a": ' * 1023 + b"1" + b"}" * 1023 + b"}",
    b'{"events": [' + b"[" * 1022 + b"]" * 1022 + b', {"features": {"x": 1}, "label": 1}]}',
    b'{"events": [{"features": {"x": 1}, "label": 1}, {"features": {"x": 1}, "label": 1,'
    b' "id": ' + b"[" * 1021 + b"]" * 1021 + b"}]}",
    b'{"events": [{"features": {"x": 1}, "label": 1}, {"features": {"x": NaN}, "label": 1}]}',
    b'{"events": [{"features": {"x": 1}, "label": 1}, {"features": {"x": 1e999}}]}',
    b'{"events": [{"features": {"x": 1}, "label": 1}, {"features": {"x": "\\udc00"}}]}',
    b'{"events": [{"features": {"x": 1}, "label": 1}, {"features": {"x": 1}, "label": 1}',
    b'{"events": [{"features": {"x": 1}, "label": 1},]}',
    b'{"events": [{"features": {"x": 1}, "label": 1}] x',
]


@pytest.fixture(scope="module")
def corpus_runs() -> dict:
    """The hand-written corpus and a random stream through the JVM, once per task."""
    runs = {}
    for k, task in enumerate(TASKS):
        messages = CORPUS + random_messages(random.Random(100 + k), task, 3000)
        paths: dict = {}
        batches, rejections = jvm_tool.encode(
            messages, task, BITS, DENSE, MAX_FEATURES, each=True, dlq=DLQ, paths=paths
        )
        runs[task] = (messages, batches, rejections, paths)
    return runs


def _by_message(rejections: list[dict], n: int) -> list[list[dict]]:
    out: list[list[dict]] = [[] for _ in range(n)]
    for r in rejections:
        out[r["message"]].append(r)
    return out


def test_corpus_has_many_kinds() -> None:
    assert len(CORPUS) >= 40
    assert len(set(CORPUS)) == len(CORPUS)


@pytest.mark.parametrize("task", TASKS)
def test_hand_written_corpus_agrees_with_python(corpus_runs: dict, task: str) -> None:
    messages, batches, rejections, _ = corpus_runs[task]
    per_message = _by_message(rejections, len(messages))
    for i in range(len(CORPUS)):
        check_message(messages[i], task, batches[i], per_message[i])


@pytest.mark.parametrize("task", TASKS)
def test_random_stream_agrees_with_python(corpus_runs: dict, task: str) -> None:
    messages, batches, rejections, paths = corpus_runs[task]
    per_message = _by_message(rejections, len(messages))
    n_valid = 0
    for i in range(len(CORPUS), len(messages)):
        check_message(messages[i], task, batches[i], per_message[i])
        n_valid += read_encoded_batch(batches[i], (1 << BITS) + len(DENSE))[0].n_rows
    # the stream exercises both sides: mostly valid events, and rejections of many fields
    fields = {r["field"].split(".")[0] for r in rejections if r["message"] >= len(CORPUS)}
    assert n_valid > 1800
    assert len(messages) - len(CORPUS) > 300
    # and both of the encoder's paths: the fast scanner and the complete port
    assert min(paths["scanned"], paths["items_by_tree"], paths["by_tree"]) > 100, paths
    assert {"features", "label", "message"} <= fields


def test_corpus_covers_every_rejection_reason(corpus_runs: dict) -> None:
    """Each check events.py makes (and the two hasher refusals) is met by the corpus."""
    reasons = " | ".join(
        r["reason"] for run in corpus_runs.values() for r in run[2] if r["message"] < len(CORPUS)
    )
    for expected in (
        "expected a JSON object (an event or an envelope), got bad JSON (",
        "expected a list of events",
        "expected a JSON object with `features`",
        "expected only the fields features, id, key, label, ts, weight, got an unknown field",
        "expected a number >= 0 (the event's importance; 1 when absent), got -1",
        "expected an object of name → value, got nothing",
        "expected an object of name → value, got [1,2]",
        "expected at least one feature, got an empty object",
        f"expected at most {MAX_FEATURES} features, got 9",
        "expected a list of strings, got an item 1",
        "expected a number, a string, a list of strings or true/false, got null",
        "expected a label (0/1 or true/false), got",
        "expected a class name (string) or an integer class, got",
        "expected a string or an integer, got 1.5",
        "expected event time in milliseconds (an integer >= 0), got -1",
        'expected a number (it is a dense feature), got "old"',
        'expected non-empty string feature names, got ""',
        "field `events`: expected at least one event, got an empty list",
        "expected a string or an integer, got " + "[" * 57 + "...",
        "expected a list of strings, got an item " + "[" * 57 + "...",
        "expected a list of events, got " + '{"a":' * 11 + '{"...',
        "...",
    ):
        assert expected in reasons, expected


def test_one_batch_for_many_messages_holds_every_row() -> None:
    """Without --each, all valid events of all messages go into one batch, in order."""
    for task in ("multiclass", "regression"):
        messages = CORPUS[:30] + random_messages(random.Random(7), task, 300)
        (batch_bytes,), _ = jvm_tool.encode(messages, task, BITS, DENSE, MAX_FEATURES, each=False)
        batch, labels, weights = read_encoded_batch(batch_bytes, (1 << BITS) + len(DENSE))
        rows = [row for m in messages for row in reference(m, task, BITS, DENSE, MAX_FEATURES)[0]]
        assert batch.n_rows == len(rows) == len(labels)
        assert weights is not None  # some events of the stream give a weight
        assert _same_bits(weights, np.array([r[4] for r in rows]))
        assert batch.indices.tolist() == [i for r in rows for i in r[0].tolist()]
        assert _same_bits(batch.values, np.concatenate([r[1] for r in rows]))
        if task == "multiclass":
            assert [(type(x), x) for x in labels] == [(type(r[3]), r[3]) for r in rows]
        else:
            assert _same_bits(labels, np.array([float(r[3]) for r in rows]))


def test_small_hash_spaces_agree() -> None:
    """Slots are masked to the hasher's bits: 3 bits, no dense names."""
    messages = CORPUS[:25] + random_messages(random.Random(3), "binary", 300)
    batches, rejections = jvm_tool.encode(messages, "binary", 3, (), 10_000)
    per_message = _by_message(rejections, len(messages))
    for m, b, r in zip(messages, batches, per_message, strict=True):
        check_message(m, "binary", b, r, bits=3, dense=(), max_features=10_000)


def test_a_small_cache_changes_nothing() -> None:
    """The remembered slots are emptied every few events: same results, from scratch."""
    messages = CORPUS[:25] + random_messages(random.Random(5), "binary", 3000)
    paths: dict = {}
    batches, rejections = jvm_tool.encode(
        messages, "binary", BITS, DENSE, MAX_FEATURES, paths=paths, cache_size=40
    )
    per_message = _by_message(rejections, len(messages))
    for m, b, r in zip(messages, batches, per_message, strict=True):
        check_message(m, "binary", b, r)
    assert paths["scanned"] > 100


# -- dead letters --------------------------------------------------------------------------------


def test_dead_letter_records_match_python(corpus_runs: dict) -> None:
    """Every rejection of the corpus and the random stream: the JVM's record is the bytes
    Python's builder writes for the same rejection."""
    topic, partition, offset, at_ms = DLQ
    not_utf8 = 0
    for _messages, _batches, rejections, _paths in corpus_runs.values():
        for r in rejections:
            expected = dead_letter(
                stage="train", topic=topic, partition=partition, offset=offset,
                index=r["index"], field=r["field"], reason=r["reason"], raw=r["raw"],
                at_ms=at_ms, code=r["code"],
            )
            assert orjson.loads(r["dlq"])["code"] == r["code"] and r["code"]
            assert r["dlq"] == expected, (r["dlq"][:300], expected[:300])
            try:
                r["raw"].decode("utf-8")
            except UnicodeDecodeError:
                not_utf8 += 1
    assert not_utf8 > 0  # some raw bytes were not UTF-8


def _edge_rows() -> list[tuple]:
    """Builder arguments at and around every bound, in every kind of character."""
    v, r, f = DEAD_LETTER_VALUE_BYTES, DEAD_LETTER_REASON_CHARS, DEAD_LETTER_FIELD_CHARS
    raws = [b"", b"\xff", bytes(range(256)), b"a" * (v - 1), b"\xfe" * v, b"q" * (v + 1),
            b'\\"' * 450_000, bytes(range(256)) * 4000]
    texts = ["", "x", "é" * r, "é" * (r + 1), "😀" * (r + 5), "\x01\t\n\"\\" * 300,
             "a" * (r - 3) + "😀😀😀😀", "\u2028\x7f名前" * 400]
    fields = ["label", "features." + "n" * f, "features." + "😀" * f, "\x00" * (f + 1)]
    rows = []
    for i, raw in enumerate(raws):
        for j, reason in enumerate(texts):
            rows.append(("train" if (i + j) % 2 else "score", "events.v1-_x", i, 10**12 + j,
                         None if j % 3 == 0 else j * 1000,
                         None if j % 4 == 1 else "features.not_finite",
                         fields[(i + j) % len(fields)], reason, raw, 1_700_000_000_000 + i))
    return rows


def test_dead_letter_builders_agree_at_every_bound() -> None:
    """The same arguments give the same bytes in Python and the JVM, and every record is
    bounded: one base64 copy of at most the first 64 KiB, size and sha256 of all of it."""
    rows = _edge_rows()
    got = jvm_tool.dead_letters(rows)
    assert len(got) == len(rows)
    for row, record in zip(rows, got, strict=True):
        stage, topic, partition, offset, index, code, field, reason, raw, at_ms = row
        expected = dead_letter(stage=stage, topic=topic, partition=partition, offset=offset,
                               index=index, field=field, reason=reason, raw=raw, at_ms=at_ms,
                               code=code)
        assert record == expected, (row[6][:40], row[7][:40], len(raw))
        assert len(record) <= DEAD_LETTER_MAX_BYTES
        doc = orjson.loads(record)
        assert doc["code"] == code
        kept = base64.b64decode(doc["value_b64"])
        assert kept == raw[:DEAD_LETTER_VALUE_BYTES]
        assert doc["truncated"] is (len(raw) > DEAD_LETTER_VALUE_BYTES)
        assert doc["size"] == len(raw) and doc["sha256"] == hashlib.sha256(raw).hexdigest()
        assert len(doc["reason"]) <= DEAD_LETTER_REASON_CHARS
        assert len(doc["field"]) <= DEAD_LETTER_FIELD_CHARS
        if len(reason) > DEAD_LETTER_REASON_CHARS:
            assert doc["reason"] == reason[: DEAD_LETTER_REASON_CHARS - 3] + "..."
        else:
            assert doc["reason"] == reason


def test_the_longest_record_stays_within_the_bound() -> None:
    """The worst case of every part at once (escapes cost 6 bytes a character, a Kafka topic
    name is at most 249 characters) is still under DEAD_LETTER_MAX_BYTES."""
    worst = ("train", "t" * 249, -(2**31), -(2**63), 2**31 - 1, "features.not_finite",
             "\x01" * 10_000, "\x01" * 10_000, b"\xff" * 1_000_000, -(2**63))
    (record,) = jvm_tool.dead_letters([worst])
    assert 90_000 < len(record) <= DEAD_LETTER_MAX_BYTES


# the poison kinds: broker-accepted messages whose dead letters once exceeded 1 MiB
POISON = [
    (b'{"features": {' + b", ".join(b'"f%d": %d' % (i, i) for i in range(100_000))
     + b'}, "label": 1}', "features"),
    (b"\xff\xfe" * 450_000, "message"),
    (b'{"features": {"x": "' + b'\\"' * 450_000 + b'"}, "label": "yes"}', "label"),
]


def test_poison_messages_are_rejected_into_bounded_records() -> None:
    """100k features, 900 KB that is not UTF-8, 900 KB of escaped quotes with a bad label:
    each one rejection naming its field, its record bounded and the same as Python's."""
    topic, partition, offset, at_ms = DLQ
    messages = [m for m, _ in POISON]
    assert min(map(len, messages)) > 899_000
    batches, rejections = jvm_tool.encode(messages, "binary", BITS, (), 10_000, dlq=DLQ)
    assert read_encoded_batch(batches[0], 1 << BITS)[0].n_rows == 0
    assert [(r["message"], r["field"]) for r in rejections] == [
        (i, field) for i, (_, field) in enumerate(POISON)
    ]
    for r, (message, field) in zip(rejections, POISON, strict=True):
        (bad,) = EventDecoder("binary").decode(message)[1]
        assert (bad.field, bad.index) == (r["field"], r["index"]) == (field, None)
        expected = dead_letter(stage="train", topic=topic, partition=partition, offset=offset,
                               index=None, field=bad.field, reason=r["reason"], raw=message,
                               at_ms=at_ms, code=bad.code)
        assert r["dlq"] == expected
        assert len(r["dlq"]) <= DEAD_LETTER_MAX_BYTES
        doc = orjson.loads(r["dlq"])
        assert doc["truncated"] and doc["size"] == len(message)
        assert doc["sha256"] == hashlib.sha256(message).hexdigest()
        assert base64.b64decode(doc["value_b64"]) == message[:DEAD_LETTER_VALUE_BYTES]
        assert f"`{field}`" in doc["reason"]


# -- hashing ---------------------------------------------------------------------------------------


def _random_text(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:
        return "".join(rng.choice("abcxyz0189_-. ") for _ in range(rng.randint(1, 12)))
    if kind < 0.6:
        alphabet = "éüßçø中文字東京名前абвгд😀🎉𝄞\u00a0\u2028\x01\x7f\"'\\"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20)))
    if kind < 0.9:
        return "".join(chr(rng.choice([rng.randint(32, 0xD7FF), rng.randint(0xE000, 0x10FFFF)]))
                       for _ in range(rng.randint(1, 40)))
    return "".join(rng.choice("abcdef€") for _ in range(rng.randint(100, 3000)))  # many blocks


def test_blake2b_slots_and_signs_agree_with_python() -> None:
    rng = random.Random(11)
    pairs: list[tuple[str, str | None]] = [("", None), ("x", ""), ("a" * 128, "b" * 129)]
    pairs += [("a" * n, "b" * n) for n in (127, 128, 129, 255, 256, 257)]
    pairs += [(_random_text(rng), None if rng.random() < 0.3 else _random_text(rng))
              for _ in range(3000)]
    got = jvm_tool.hashes(pairs, BITS)
    assert len(got) == len(pairs)
    for (name, value), (name_hash, value_hash, slot, sign, digest) in zip(pairs, got, strict=True):
        assert name_hash == _hash_name(name), name
        assert value_hash == (0 if value is None else _hash_value(value)), value
        assert (slot, sign) == feature_slot(name, value, bits=BITS), (name, value)
        full = hashlib.blake2b(name.encode(), digest_size=64, person=b"sl.name").hexdigest()
        assert digest == full, name


# -- the reader ----------------------------------------------------------------------


def _one_batch() -> bytes:
    head = b"SLE1" + struct.pack("<3I", 1, 2, 0)
    return head + struct.pack("<3d", 1.0, -2.0, 1.0) + struct.pack("<2i", 0, 2) + \
        struct.pack("<2i", 5, 9) + bytes([1, 0])


def test_reader_reads_a_hand_built_batch() -> None:
    batch, labels, weights = read_encoded_batch(_one_batch(), n_slots=16)
    assert batch.indices.tolist() == [5, 9] and batch.values.tolist() == [1.0, -2.0]
    assert labels.tolist() == [1.0] and weights is None


def _weighted(weight: float) -> bytes:
    """The batch of :func:`_one_batch` with its row's weight (kind bit 1)."""
    good = _one_batch()
    head = good[:12] + struct.pack("<I", 2)
    return head + good[16:16 + 24] + struct.pack("<d", weight) + good[16 + 24:]


def test_reader_reads_weights_after_the_labels() -> None:
    batch, labels, weights = read_encoded_batch(_weighted(2.5), n_slots=16)
    assert batch.indices.tolist() == [5, 9] and labels.tolist() == [1.0]
    assert weights is not None and weights.tolist() == [2.5]
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValidationError) as err:
            read_encoded_batch(_weighted(bad), n_slots=16)
        assert err.value.field == "weights"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b[:-1], "encoded batch"),
        (lambda b: b + b"\x00", "encoded batch"),
        (lambda b: b[:10], "encoded batch"),
        (lambda b: b"SLE2" + b[4:], "magic"),
        (lambda b: b[:12] + struct.pack("<I", 4) + b[16:], "kind"),
        (lambda b: b[:12] + struct.pack("<I", 2) + b[16:], "encoded batch"),  # no weights
        (lambda b: b[:-1] + b"\x02", "numeric"),
        (lambda b: b[:4] + struct.pack("<I", 3) + b[8:], "encoded batch"),
        (lambda b: b[:16 + 24 + 4] + struct.pack("<i", 1) + b[16 + 24 + 8:], "offsets"),
        (lambda b: b[:16 + 24 + 8] + struct.pack("<i", 99) + b[16 + 24 + 12:], "indices"),
    ],
)
def test_reader_refuses_a_broken_batch(mutate, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        read_encoded_batch(mutate(_one_batch()), n_slots=16)
    assert err.value.field == field


def test_reader_refuses_labels_that_do_not_fit() -> None:
    good = _one_batch()
    head = good[:12] + struct.pack("<I", 1)
    body = good[16:16 + 16] + good[16 + 24:]  # drop the float label: kind 1 carries JSON
    assert read_encoded_batch(head + body + b'["a"]', 16)[1] == ["a"]
    for tail in (b'["a", "b"]', b'{"a": 1}', b"[1", b""):
        with pytest.raises(ValidationError) as err:
            read_encoded_batch(head + body + tail, 16)
        assert err.value.field == "labels"


# -- the random stream ----------------------------------------------------------------------


class _Raw(str):
    """JSON text written as is (numbers in chosen spellings)."""


def _json(value, rng: random.Random, clean: bool = False) -> str:
    if isinstance(value, _Raw):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=not clean and rng.random() < 0.3)
    if isinstance(value, list):
        sep = rng.choice([",", ", ", " ,\n "])
        return "[" + sep.join(_json(v, rng, clean) for v in value) + "]"
    if isinstance(value, tuple):  # an object as (key, value) pairs: keys may repeat
        sep = rng.choice([",", ", ", " , "])
        colon = rng.choice([":", ": ", " : "])
        return "{" + sep.join(
            _json(k, rng, clean) + colon + _json(v, rng, clean) for k, v in value
        ) + "}"
    return json.dumps(value)


NAMES = [f"c{i}" for i in range(12)] + [f"n{i}" for i in range(6)] + [
    "age", "score", "ville", "名前", "é", "emoji😀", "with space", "long-" + "y" * 60, "\x7f",
]
ODD_NAMES = ['q"uote', "back\\slash", "tab\tname"]  # written with escapes
WORDS = ["v1", "v2", "v3", "FR", "DE", "", "Zürich", "東京", "😀", "NaN", "a" * 70, "\u2028",
         "\x7f"]
ODD_WORDS = ["tab\there", 'it\'s "q"', "back\\slash"]


def _number(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.35:
        return repr(rng.gauss(0, 1))
    if kind < 0.5:
        return str(rng.randint(-1000, 1000))
    if kind < 0.6:
        return rng.choice(["0", "-0", "-0.0", "0.0", "1e5", "1E5", "2.5e-3", "-7.25E+2", "1e-7",
                           "5e-324", "1.7976931348623157e308", "123.456e10"])
    if kind < 0.7:
        return str(rng.choice([2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63),
                               -(2**63) - 1, 10**25, rng.randint(-10**18, 10**18)]))
    if kind < 0.85:
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(15, 25)))
        return rng.choice(["", "-"]) + "0." + digits
    mant = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 19))).lstrip("0") or "0"
    return f"{mant}.{rng.randint(0, 99999)}e{rng.randint(-30, 30)}"


def _feature_value(rng: random.Random, name: str, clean: bool):
    kind = rng.random()
    words = WORDS if clean else WORDS + ODD_WORDS
    if name in DENSE:
        if kind < 0.9:
            return _Raw(_number(rng))
        if clean or kind < 0.97:  # what the hasher also takes for a dense name
            return rng.random() < 0.5 if kind < 0.95 else []
    if kind < 0.4:
        return rng.choice(words)
    if kind < 0.75:
        return _Raw(_number(rng))
    if kind < 0.85:
        return rng.random() < 0.5
    if clean or kind < 0.985:
        return [rng.choice(words) for _ in range(rng.randint(0, 4))]
    return rng.choice([None, (("a", 1),), ["a", 1], [["x"]], [None]])


def _label(rng: random.Random, task: str, clean: bool):
    if not clean and rng.random() < 0.06:
        return rng.choice([None, "", "yes", 2, 0.5, [1], True, _Raw("1e0"), _Raw("-0.0"), -1])
    if task == "binary":
        return rng.choice([True, False, 0, 1, _Raw("1.0"), _Raw("0.0"), _Raw("-0")])
    if task == "regression":
        return _Raw(_number(rng))
    if clean:
        return rng.choice(["cat", "dog", "鳥", 0, 3, 17, -2])
    return rng.choice(["cat", "dog", "鳥", 0, 3, 17, 2**64 - 1, "say \"hi\""])


def _event(rng: random.Random, task: str, clean: bool):
    names = rng.sample(NAMES if clean else NAMES + ODD_NAMES, rng.randint(1, 9))
    if not clean and rng.random() < 0.05:
        names.append(rng.choice(names))  # a repeated name: first position, last value
    features = tuple((n, _feature_value(rng, n, clean)) for n in names)
    if not clean and rng.random() < 0.01:
        features = ()
    fields = [("features", features)]
    if clean or rng.random() < 0.97:
        fields.append(("label", _label(rng, task, clean)))
    for key in ("key", "ts", "id"):
        if rng.random() < 0.3:
            good = rng.choice(["k1", 7, None, _Raw(str(rng.randint(0, 2**45)))])
            bad = rng.choice([True, _Raw("1.5"), -3, ["x"]])
            fields.append((key, bad if not clean and rng.random() < 0.15 else good))
    if rng.random() < 0.2:
        good = rng.choice([_Raw(_number(rng).lstrip("-")), 2, 0, None, _Raw("-0.0")])
        bad = rng.choice([True, _Raw("-1.5"), -3, "2", [1], _Raw(str(2**64))])
        fields.append(("weight", bad if not clean and rng.random() < 0.15 else good))
    if not clean and rng.random() < 0.02:
        fields.append((rng.choice(["extra", "Label", "features "]), 1))
    if not clean and rng.random() < 0.01:
        fields.append(("label", _label(rng, task, clean)))  # a repeated key: the last counts
    rng.shuffle(fields)
    if not clean and rng.random() < 0.01:
        return rng.choice([5, "x", None, [1]])
    return tuple(fields)


def random_messages(rng: random.Random, task: str, n_events: int) -> list[bytes]:
    """A seeded stream: single events and envelopes. Half the messages are clean (the
    shapes the fast scanner reads); the others have every kind of mistake and oddity
    now and then. JSON is written by hand (repeated keys, chosen spellings)."""
    out: list[bytes] = []
    made = 0
    while made < n_events:
        clean = rng.random() < 0.5
        if rng.random() < 0.6:
            text = _json(_event(rng, task, clean), rng, clean)
            made += 1
        else:
            items = [_event(rng, task, clean) for _ in range(rng.randint(0, 40))]
            made += len(items)
            text = _json((("events", items),), rng, clean)
        if rng.random() < 0.1:
            text = rng.choice([" ", "\n", "\t"]) + text + rng.choice(["", " ", "\r\n"])
        data = text.encode()
        if not clean and rng.random() < 0.02:  # broken bytes now and then
            cut = rng.randint(0, len(data))
            data = rng.choice([data[:cut], data[:cut] + b"\xff" + data[cut:], data + b"}"])
        out.append(data)
    return out
