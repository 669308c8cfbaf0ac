"""The conformance corpus: messages and settings, and what the contract makes of them.

``events.jsonl`` (next to this file) holds one case per line, generated from
:mod:`streamlearn.contract.reference` by ``python -m streamlearn.contract.corpus --write``
(``--check`` says whether the checked-in file is current). A case::

    {"case": "features.not_object/number",          # a unique name: what it covers / how
     "settings": {"task": "binary", "labels": "required", "bits": 8, "dense": [],
                  "max_features": 10000, "max_events": null, "crosses": [["u", "i"]]},
     "message": "{\\"features\\": 3, \\"label\\": 1}",  # the bytes as UTF-8 text, or
     "message_b64": null,                            # their base64 when not UTF-8
     "events": [{"index": null, "rows": [[slot, value, numeric], ...], "label": 1,
                 "weight": 1.0}],
     "rejections": [{"index": null, "field": "features", "code": "features.not_object",
                     "reason": "field `features`: expected ..., got 3"}]}

``events`` are the valid events in order: ``index`` in the envelope (null: a single event),
their entries ``[slot, value, numeric]`` in the order of the features (a value is a JSON
number written exactly: compare bits), the label as the decoder gives it (null when
labels are ignored or absent), and the weight the event learns with (1.0 when it gives none;
serving, which ignores it, does not compare it). ``rejections`` are in message order. ``labels``:
``"required"`` is training (the Flink job, the JVM encoder), ``"optional"`` the scoring job,
``"ignored"`` the serving API. ``reason`` is the contract's rendering; implementations
compare ``code``, ``field`` and ``index`` (the detail inside ``message.not_json`` is the
parser's own words).

``objects.jsonl`` holds the cases only Python objects can bring (a NaN, an integer name):
the event as tagged JSON (``{"$float": "nan"}``, features as ``[[name, value], ...]`` pairs
where a name may be ``{"$int": 3}``), replayed through ``EventDecoder.validate`` and the
feature hasher; other languages skip it.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from streamlearn.contract import (
    CROSS_LIMIT,
    EVENT_FIELDS,
    FIELD_KINDS,
    HASH,
    LABEL_EXPECTED,
    MAX_BITS,
    MAX_FEATURES,
    RULES,
    TASKS,
    Rejection,
)
from streamlearn.contract.reference import Decoded, Settings, decode

__all__ = [
    "CORPUS",
    "OBJECTS",
    "cases",
    "from_tagged",
    "generate",
    "load",
    "object_cases",
]

HERE = Path(__file__).parent
CORPUS = HERE / "events.jsonl"
OBJECTS = HERE / "objects.jsonl"
#: The contract's codes and limits for the C fast path of serving, generated with the corpus.
C_HEADER = HERE.parent.parent / "serving" / "_native_codes.h"
#: the JVM encoder's copy of the contract's data (in a source tree only)
JAVA_RULES = (HERE.parent.parent.parent / "jvm" / "src" / "main" / "java" / "io" / "streamlearn"
              / "flink" / "ContractRules.java")

B8 = {"bits": 8}
DENSE = {"bits": 8, "dense": ("age", "flag", "none")}


def _messages() -> Iterator[tuple[str, dict, bytes]]:
    """(name, settings, message) of every case, before the reference's verdict."""
    one = b'{"features": %s, "label": 1}'
    # -- feature kinds, one event each
    kinds = {
        "kind.integer": b'{"x": 3}',
        "kind.negative-float": b'{"x": -2.5}',
        "kind.exponent": b'{"x": 1.5e3, "y": 2E-2}',
        "kind.zero": b'{"x": 0, "y": -0.0}',
        "kind.big-integer": b'{"x": 12345678901234567890}',
        "kind.long-decimal": b'{"x": 0.1000000000000000055511151231257827}',
        "kind.string": b'{"country": "FR"}',
        "kind.unicode-string": '{"ville": "Zürich", "emoji": "😀"}'.encode(),
        "kind.escaped-string": b'{"a\\"b": "c\\\\d", "e": "\\u00e9"}',
        "kind.list": b'{"tags": ["a", "b", "a"]}',
        "kind.empty-list": b'{"tags": [], "x": 1}',
        "kind.true": b'{"vip": true}',
        "kind.false": b'{"vip": false, "x": 2}',
        "kind.mixed": b'{"age": 31, "country": "FR", "tags": ["a", "b"], "vip": true}',
        "kind.repeated-name": b'{"x": 1, "y": 2, "x": "late"}',
        "kind.integer-like-name": b'{"0": 1.5, "17": "a"}',
        "kind.whitespace": b' { "x" :\n\t1 , "s" : "v" } ',
    }
    for name, features in kinds.items():
        yield f"features.{name}", B8, one % features
    yield "features.kind.dense", DENSE, one % b'{"age": 42.5, "flag": true, "none": [], "c": "x"}'
    yield "features.kind.dense-false", DENSE, one % b'{"flag": false, "age": 0}'
    yield "features.kind.many", {**B8, "max_features": 3}, one % b'{"a": 1, "b": 2, "c": 3}'
    # -- crosses: entries of pairs of features after the event's own
    cross = {**B8, "crosses": (("u", "i"), ("tags", "x"))}
    crossed = {
        "string-string": b'{"i": "b", "x": 1, "u": "a"}',
        "list-number": b'{"tags": ["p", "q"], "x": -2.5, "u": "a", "i": "b"}',
        "absent": b'{"u": "a", "x": 3}',
        "empty-list": b'{"tags": [], "x": 3, "u": "a", "i": "b"}',
        "boolean": b'{"u": false, "i": true}',
        "collide": b'{"u": "a", "i": "a", "tags": ["a", "a"], "x": 0}',
    }
    for name, features in crossed.items():
        yield f"features.cross.{name}", cross, one % features
    yield "features.cross.dense", {**DENSE, "crosses": (("age", "c"), ("c", "flag"))}, (
        one % b'{"c": "x", "age": 42.5, "flag": true}'
    )
    items = b", ".join(b'"%d"' % i for i in range(101))
    yield "features.too_many_crossed/lists", {**B8, "crosses": (("a", "b"),)}, (
        one % b'{"a": [%s], "b": [%s]}' % (items, items)
    )
    # -- labels, per task
    labels = {
        "binary": [b"1", b"0", b"true", b"false", b"1.0"],
        "regression": [b"2.5", b"-3", b"0"],
        "multiclass": [b'"cat"', b"7", b'"0"'],
    }
    for task, values in labels.items():
        for value in values:
            yield (
                f"label.{task}.{value.decode()}",
                {**B8, "task": task},
                b'{"features": {"x": 1}, "label": %s}' % value,
            )
    # -- labels where they are optional (the scoring job): checked when given
    optional = {**B8, "labels": "optional"}
    yield "label.optional.absent", optional, b'{"features": {"x": 1}}'
    yield "label.optional.given", optional, b'{"features": {"x": 1}, "label": true}'
    yield "label.invalid/optional", optional, b'{"features": {"x": 1}, "label": 3}'
    # -- optional fields
    yield "fields.all", B8, b'{"key": "u-1", "features": {"x": 1}, "label": 0, "ts": 5, "id": 9}'
    yield "fields.null", B8, b'{"key": null, "features": {"x": 1}, "label": 0, "ts": null}'
    yield "fields.int-key", B8, b'{"key": 42, "features": {"x": 1}, "label": 0, "id": "e"}'
    yield "fields.bool-key", B8, b'{"key": true, "features": {"x": 1}, "label": 0, "id": false}'
    yield "fields.weight", B8, b'{"features": {"x": 1}, "label": 1, "weight": 2.5}'
    yield "fields.weight-integer", B8, b'{"weight": 3, "features": {"x": 1}, "label": 1}'
    yield "fields.weight-zero", B8, b'{"features": {"x": 1}, "label": 0, "weight": 0}'
    yield "fields.weight-negative-zero", B8, b'{"features": {"x": 1}, "label": 0, "weight": -0.0}'
    yield "fields.weight-null", B8, b'{"features": {"x": 1}, "label": 0, "weight": null}'
    yield "fields.weight-exponent", B8, b'{"features": {"x": 1}, "label": 0, "weight": 1.5e-3}'
    yield "envelope.weights", B8, (
        b'{"events": [{"features": {"x": 1}, "label": 1, "weight": 0.5},'
        b' {"features": {"x": 2}, "label": 0}, {"features": {"x": 3}, "label": 1, "weight": -1},'
        b' {"features": {"c": "v"}, "label": 0, "weight": 4}]}'
    )
    # -- envelopes
    yield "envelope.two", B8, (
        b'{"events": [{"features": {"x": 1}, "label": 1}, {"features": {"c": "v"}, "label": 0}]}'
    )
    yield "envelope.mixed", B8, (
        b'{"events": [{"features": {"x": 1}, "label": 1}, 5, {"features": {}},'
        b' {"features": {"y": [1]}, "label": 0}, {"features": {"z": true}, "label": false}]}'
    )
    yield "envelope.other-fields", B8, (
        b'{"meta": {"a": 1}, "events": [{"features": {"x": 1}, "label": 1}]}'
    )
    yield "envelope.with-features", B8, b'{"events": [], "features": {"x": 1}, "label": 1}'
    yield "envelope.nested-envelope", B8, (
        b'{"events": [{"events": [{"features": {"x": 1}}]}, {"features": {"x": 1}, "label": 1}]}'
    )
    # -- one case per rejection code (at least)
    bad = {
        "message.not_json/garbage": b"not json",
        "message.not_json/truncated": b'{"features": {"x": 1}',
        "message.not_json/nan": b'{"features": {"x": NaN}, "label": 1}',
        "message.not_json/infinity": b'{"features": {"x": 1e999}, "label": 1}',
        "message.not_json/trailing-comma": b'{"features": {"x": 1,}, "label": 1}',
        "events.not_list/object": b'{"events": {"a": 1}}',
        "events.not_list/null": b'{"events": null}',
        "events.empty/list": b'{"events": []}',
        "event.not_object/number": b"5",
        "event.not_object/list": b'[{"features": {"x": 1}}]',
        "event.not_object/string": b'"features"',
        "event.unknown_field/one": b'{"features": {"x": 1}, "label": 1, "score": 2}',
        "event.unknown_field/first-sorted": b'{"zz": 1, "features": {"x": 1}, "label": 1, "aa": 2}',
        "features.missing/absent": b'{"label": 1}',
        "features.missing/null": b'{"features": null, "label": 1}',
        "features.not_object/number": b'{"features": 3, "label": 1}',
        "features.not_object/list": b'{"features": [["x", 1]], "label": 1}',
        "features.empty/object": b'{"features": {}, "label": 1}',
        "features.empty/spaced": b'{"features": { } }',
        "features.empty_name/alone": b'{"features": {"": 1}, "label": 1}',
        "features.empty_name/among": b'{"features": {"x": 1, "": "a"}, "label": 1}',
        "features.bad_list_item/number": b'{"features": {"tags": ["a", 1]}, "label": 1}',
        "features.bad_list_item/null": b'{"features": {"tags": [null]}, "label": 1}',
        "features.bad_list_item/nested": b'{"features": {"tags": [["a"]]}, "label": 1}',
        "features.bad_value/null": b'{"features": {"x": null}, "label": 1}',
        "features.bad_value/nested-object": b'{"features": {"x": {"y": 1}}, "label": 1}',
        "features.bad_value/deep": b'{"features": {"x": ' + b'{"a": ' * 20 + b"1" + b"}" * 22,
        "message.not_json/deep-braces": b'{"features": {"x": ' + b"{" * 20 + b"}" * 22,
        "label.missing/training": b'{"features": {"x": 1}}',
        "label.invalid/two": b'{"features": {"x": 1}, "label": 2}',
        "label.invalid/string": b'{"features": {"x": 1}, "label": "yes"}',
        "label.invalid/null": b'{"features": {"x": 1}, "label": null}',
        "key.invalid/float": b'{"features": {"x": 1}, "label": 1, "key": 1.5}',
        "key.invalid/list": b'{"features": {"x": 1}, "label": 1, "key": ["k"]}',
        "ts.invalid/negative": b'{"features": {"x": 1}, "label": 1, "ts": -5}',
        "ts.invalid/float": b'{"features": {"x": 1}, "label": 1, "ts": 1.0}',
        "ts.invalid/bool": b'{"features": {"x": 1}, "label": 1, "ts": true}',
        "id.invalid/float": b'{"features": {"x": 1}, "label": 1, "id": 2.5}',
        "id.invalid/object": b'{"features": {"x": 1}, "label": 1, "id": {"a": 1}}',
        "weight.invalid/negative": b'{"features": {"x": 1}, "label": 1, "weight": -0.5}',
        "weight.invalid/string": b'{"features": {"x": 1}, "label": 1, "weight": "2"}',
        "weight.invalid/bool": b'{"features": {"x": 1}, "label": 1, "weight": true}',
        "weight.invalid/list": b'{"features": {"x": 1}, "label": 1, "weight": [1]}',
        "weight.invalid/negative-integer": b'{"weight": -3, "features": {"x": 1}, "label": 1}',
        # -- how a value is shown (the contract's show): JSON's escapes, and floats' layout
        "label.invalid/escapes": (
            b'{"features": {"x": 1}, "label": '
            b'"q\\"b\\\\s\\u0001\\u001f\\u007f\\n\\t\\u00e9\\u2028"}'
        ),
        "label.invalid/cut-astral": (
            '{"features": {"x": 1}, "label": "%s"}' % ("\U0001F600" * 70)
        ).encode(),
        "label.invalid/cut-list": (
            b'{"features": {"x": 1}, "label": [' + b", ".join([b'"abcdefghij"'] * 9) + b"]}"
        ),
        "id.invalid/float-tiny": b'{"features": {"x": 1}, "label": 1, "id": 1e-7}',
        "id.invalid/float-small": b'{"features": {"x": 1}, "label": 1, "id": 0.000001}',
        "id.invalid/float-whole": b'{"features": {"x": 1}, "label": 1, "id": 1e20}',
        "id.invalid/float-big": b'{"features": {"x": 1}, "label": 1, "id": 1e21}',
        "key.invalid/float-2e23": b'{"features": {"x": 1}, "label": 1, "key": 2e23}',
        "key.invalid/float-min": b'{"features": {"x": 1}, "label": 1, "key": 5e-324}',
        "key.invalid/float-max": (
            b'{"features": {"x": 1}, "label": 1, "key": -1.7976931348623157e308}'
        ),
        "key.invalid/float-negative-zero": b'{"features": {"x": 1}, "label": 1, "key": -0.0}',
        "key.invalid/float-digits": b'{"features": {"x": 1}, "label": 1, "key": 123456.789}',
    }
    for name, message in bad.items():
        yield name, B8, message
    yield "message.not_json/invalid-utf8", B8, b'{"features": {"x": "\xff"}, "label": 1}'
    yield "features.too_many/four", {**B8, "max_features": 3}, (
        one % b'{"a": 1, "b": 2, "c": 3, "d": 4}'
    )
    yield "features.dense_not_number/string", DENSE, one % b'{"age": "old"}'
    yield "features.dense_not_number/list", DENSE, one % b'{"x": 1, "age": ["a"]}'
    yield "label.invalid/regression-string", {**B8, "task": "regression"}, (
        b'{"features": {"x": 1}, "label": "1.5"}'
    )
    yield "label.invalid/multiclass-empty", {**B8, "task": "multiclass"}, (
        b'{"features": {"x": 1}, "label": ""}'
    )
    yield "label.invalid/multiclass-float", {**B8, "task": "multiclass"}, (
        b'{"features": {"x": 1}, "label": 1.5}'
    )


def _serving_messages() -> Iterator[tuple[str, dict, bytes]]:
    """Cases of a serving request: labels ignored, envelopes capped; and each single event
    of the training cases as the body serving reads fastest, ``{"features": {...}}``."""
    serve = {**B8, "labels": "ignored", "max_events": 3}
    head, tail = b'{"features": ', b', "label": 1}'
    for name, settings, message in _messages():
        if message.startswith(head) and message.endswith(tail) and "max_features" not in settings:
            bare = message[: -len(tail)] + b"}"
            yield f"{name}/bare", {**settings, "labels": "ignored"}, bare
    yield "serve.plain", serve, b'{"features": {"age": 31, "c": "FR", "t": ["a"], "v": true}}'
    yield "serve.label-ignored", serve, b'{"features": {"x": 1}, "label": "anything"}'
    yield "serve.weight", serve, b'{"features": {"x": 1}, "weight": 2}'
    yield "weight.invalid/serve", serve, b'{"features": {"x": 1}, "weight": -2}'
    yield "serve.envelope", serve, b'{"events": [{"features": {"x": 1}}, {"features": {"c": "v"}}]}'
    yield "events.too_many/serve", serve, (
        b'{"events": [' + b", ".join([b'{"features": {"x": 1}}'] * 4) + b"]}"
    )
    yield "serve.dense", {**DENSE, "labels": "ignored"}, b'{"features": {"age": 3, "flag": true}}'


def _outcome(result: Decoded) -> dict[str, Any]:
    return {
        "events": [
            {"index": e.index, "rows": [list(r) for r in e.rows], "label": e.label,
             "weight": e.weight}
            for e in result.events
        ],
        "rejections": [_rejection(r) for r in result.rejections],
    }


def _rejection(r: Rejection) -> dict[str, Any]:
    return {"index": r.index, "field": r.field, "code": r.code, "reason": str(r)}


def _settings(raw: dict) -> Settings:
    raw = dict(raw)
    if "dense" in raw:
        raw["dense"] = tuple(raw["dense"])
    if "crosses" in raw:
        raw["crosses"] = tuple(tuple(pair) for pair in raw["crosses"])
    return Settings(**raw)


def cases() -> list[dict[str, Any]]:
    """The corpus of messages, each with the reference's verdict."""
    out = []
    for stage in (_messages(), _serving_messages()):
        for name, raw_settings, message in stage:
            settings = _settings(raw_settings)
            try:
                text, b64 = message.decode("utf-8"), None
            except UnicodeDecodeError:
                text, b64 = None, base64.b64encode(message).decode("ascii")
            out.append(
                {
                    "case": name,
                    "settings": {**asdict(settings), "dense": list(settings.dense)},
                    "message": text,
                    "message_b64": b64,
                    **_outcome(decode(message, settings)),
                }
            )
    return out


# -- cases only Python objects can bring ------------------------------------------------------


def _tag(value: Any) -> Any:
    if type(value) is float and not math.isfinite(value):
        return {"$float": repr(value)}
    if type(value) is int and not isinstance(value, bool):
        return value
    if isinstance(value, tuple):
        return {"$tuple": [_tag(v) for v in value]}
    if type(value) is list:
        return [_tag(v) for v in value]
    return value


def from_tagged(value: Any) -> Any:
    """A tagged JSON value of ``objects.jsonl`` as the Python object it stands for.

    >>> from_tagged({"$float": "nan"}), from_tagged({"$int": 3}), from_tagged({"$tuple": [1]})
    (nan, 3, (1,))
    """
    if type(value) is dict and len(value) == 1:
        (tag, inner), = value.items()
        if tag == "$float":
            return float(inner)
        if tag == "$int":
            return int(inner)
        if tag == "$tuple":
            return tuple(from_tagged(v) for v in inner)
    if type(value) is list:
        return [from_tagged(v) for v in value]
    return value


_OBJECTS: list[tuple[str, list[tuple[Any, Any]]]] = [
    ("features.not_finite/nan", [("x", float("nan"))]),
    ("features.not_finite/infinity", [("a", 1), ("x", float("-inf"))]),
    ("features.name_not_string/float", [(1.5, 1)]),
    ("features.name_not_string/tuple", [("a", 1), ((1, 2), 1)]),
    ("features.name_not_string/bool", [(True, 1)]),
    ("features.kind.integer-names", [(0, 1.5), (1, "a"), ("b", 2)]),
]


def _tag_name(name: Any) -> Any:
    if type(name) is int:
        return {"$int": str(name)}
    return _tag(name)


def object_cases() -> list[dict[str, Any]]:
    """Cases of events given as Python objects (one event, binary, a label of 1)."""
    from streamlearn.contract.reference import encode_event

    settings = Settings(bits=8)
    out = []
    for name, pairs in _OBJECTS:
        event = {"features": dict(pairs), "label": 1}
        out.append(
            {
                "case": name,
                "settings": {**asdict(settings), "dense": list(settings.dense)},
                "features": [[_tag_name(k), _tag(v)] for k, v in pairs],
                "label": 1,
                **_outcome(encode_event(event, settings)),
            }
        )
    return out


# -- files -------------------------------------------------------------------------------------


def _lines(items: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for item in items)


def c_header() -> bytes:
    """``_native_codes.h``: each code an integer constant (``SL_FEATURES_EMPTY``, from 1 in
    sorted order; 0 is "no verdict"), their names in ``SL_CODE_NAMES``, and the limits."""
    lines = [
        "/* Generated by `python -m streamlearn.contract.corpus --write` from",
        " * streamlearn/contract/__init__.py: do not edit. */",
        "#ifndef SL_NATIVE_CODES_H",
        "#define SL_NATIVE_CODES_H",
        "",
        f"#define SL_MAX_FEATURES {MAX_FEATURES}",
        "#define SL_NO_CODE 0",
    ]
    codes = sorted(RULES)
    for number, code in enumerate(codes, 1):
        lines.append(f"#define SL_{code.replace('.', '_').upper()} {number}")
    lines.append("static const char *const SL_CODE_NAMES[] = {")
    lines.append("    NULL,")
    lines.extend(f'    "{code}",' for code in codes)
    lines.extend(["};", "", "#endif", ""])
    return "\n".join(lines).encode()


def _java_string(text: str) -> str:
    """``text`` as a Java string literal (UTF-8 source: only quotes, backslashes and
    control characters escaped)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def java_rules() -> bytes:
    """``ContractRules.java``: the contract's data for the JVM encoder (limits, hashing
    constants, fields, tasks, label texts, every rule's field/expected/got templates)."""
    q = _java_string

    def strings(values: Any) -> str:
        return "{" + ", ".join(q(v) for v in values) + "}"

    lines = [
        "// Generated by `python -m streamlearn.contract.corpus --write` from",
        "// streamlearn/contract/__init__.py: do not edit (tests/test_contract.py checks",
        "// it is current; tests/test_jvm_contract.py compares what the JVM reads from it).",
        "package io.streamlearn.flink;",
        "",
        "import java.util.LinkedHashMap;",
        "import java.util.Map;",
        "",
        "/** The event contract's data, for {@link Rules}. */",
        "final class ContractRules {",
        f"    static final int MAX_FEATURES = {MAX_FEATURES};",
        f"    static final int MAX_BITS = {MAX_BITS};",
        f"    static final String HASH_ALGORITHM = {q(HASH.algorithm)};",
        f"    static final int HASH_DIGEST_SIZE = {HASH.digest_size};",
        f"    static final String HASH_NAME_PERSON = {q(HASH.name_person.decode())};",
        f"    static final String HASH_VALUE_PERSON = {q(HASH.value_person.decode())};",
        f"    static final int HASH_BITS = {HASH.bits};",
        f"    static final long HASH_GOLDEN = 0x{HASH.golden:016X}L;",
        f"    static final long HASH_MIX_1 = 0x{HASH.mix_1:016X}L;",
        f"    static final long HASH_MIX_2 = 0x{HASH.mix_2:016X}L;",
        f"    static final int HASH_SHIFT = {HASH.shift};",
        f"    static final long HASH_CROSS_TAG = 0x{HASH.cross_tag:016X}L;",
        f"    static final int CROSS_LIMIT = {CROSS_LIMIT};",
        f"    static final String[] EVENT_FIELDS = {strings(EVENT_FIELDS)};",
        "    /** The optional fields checked by kind alone (the contract's FIELD_KINDS). */",
        "    static final String[][] FIELD_KINDS = {"
        + ", ".join(f"{{{q(n)}, {q(k)}}}" for n, k in FIELD_KINDS.items()) + "};",
        f"    static final String[] TASKS = {strings(TASKS)};",
        f"    static final String[] LABEL_EXPECTED = {strings(LABEL_EXPECTED[t] for t in TASKS)};",
        "    /** code -> {field, expected, got} templates. */",
        "    static final Map<String, String[]> RULES = new LinkedHashMap<>();",
        "",
        "    static {",
    ]
    for code, rule in RULES.items():
        lines.append(f"        RULES.put({q(code)}, new String[] {{")
        lines.append(f"            {q(rule.field)}, {q(rule.expected)}, {q(rule.got)}}});")
    lines.extend(["    }", "", "    private ContractRules() {}", "}", ""])
    return "\n".join(lines).encode()


def generate() -> dict[Path, bytes]:
    """The corpus files' bytes, as the reference gives them, the C header of the codes and,
    in a source tree (where ``jvm/`` is), the JVM encoder's ``ContractRules.java``."""
    out = {CORPUS: _lines(cases()), OBJECTS: _lines(object_cases()), C_HEADER: c_header()}
    if JAVA_RULES.parent.is_dir():
        out[JAVA_RULES] = java_rules()
    return out


def load(path: Path = CORPUS) -> list[dict[str, Any]]:
    """The checked-in cases of one corpus file."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def covered_codes() -> set[str]:
    """Every code some case of the corpus expects."""
    return {
        r["code"] for path in (CORPUS, OBJECTS) for case in load(path) for r in case["rejections"]
    }

