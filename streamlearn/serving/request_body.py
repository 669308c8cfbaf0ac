"""Decode and validate prediction requests (JSON or Arrow IPC).

A JSON body is one event or an envelope ``{"events": [...]}``, with the event
schema of training minus the label (a ``label`` is accepted and ignored). An
Arrow IPC stream body (``application/vnd.apache.arrow.stream``) is a table
whose columns are features, one row per event, nulls meaning "absent": the
fast path for batches, decoded column by column rather than value by value.

The rules of an event are those of :mod:`streamlearn.contract`, with the
contract's codes and words; a label is ignored (``labels="ignored"`` in the
conformance corpus). Every problem is a :class:`Problem`: its ``code``, the
``index`` of its event in an envelope, its field inside the event
(``event_field``), and its ``field`` as the request names it, a dotted path
such as ``events[3].features.age``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamlearn.contract import (
    EVENT_FIELDS,
    FIELD_KINDS,
    MAX_FEATURES,
    RULES,
    Rejection,
    field_ok,
    render,
)
from streamlearn.errors import ValidationError
from streamlearn.serving.arrow_kinds import arrow_kinds
from streamlearn.serving.arrow_limits import Declared, UnreadableStream, declared_sizes

__all__ = [
    "ARROW_STREAM",
    "BadRequest",
    "EventBatch",
    "ColumnBatch",
    "parse_json",
    "parse_arrow",
    "check_arrow",
    "decode_arrow",
    "load_json",
    "check_json",
    "plain_features",
    "Problem",
]

ARROW_STREAM = "application/vnd.apache.arrow.stream"
EVENT_KEYS = frozenset(EVENT_FIELDS)
MAX_PROBLEMS = 20
# the contract's words, for the Arrow path's columns
FEATURE_EXPECTED = RULES["features.bad_value"].expected
NO_FEATURE_EXPECTED, NO_FEATURE_GOT = render("features.empty")[1:]
EMPTY_NAME_EXPECTED, EMPTY_NAME_GOT = render("features.empty_name")[1:]
# An Arrow body may not decode to more than MAX_RATIO times its size once past
# RATIO_FLOOR bytes (real feature columns compress far less; bombs far more).
MAX_RATIO = 1000
RATIO_FLOOR = 1 << 20


class BadRequest(ValidationError):
    """A request the service refuses; ``problems`` lists every bad field found.

    ``status`` is the HTTP status to answer with (400 unreadable, 422 invalid).

    >>> err = BadRequest([ValidationError("events[0].features", "an object", "3")])
    >>> err.status, err.field
    (422, 'events[0].features')
    """

    def __init__(
        self, problems: list[ValidationError], status: int = 422, body_unread: bool = False
    ) -> None:
        first = problems[0]
        super().__init__(first.field, first.expected, first.got, first.where)
        self.problems = problems
        self.status = status
        #: refused before the whole body was received: the service reads and drops the
        #: rest after answering, so that the client reads the answer (see ``app.py``)
        self.body_unread = body_unread

    def to_json(self) -> dict[str, Any]:
        """The JSON body of the error response; a problem of an event's rules also gives
        the contract's ``code`` (``features.not_finite``, ...)."""
        return {
            "error": "invalid request" if self.status == 422 else "unreadable request",
            "fields": [_problem_json(p) for p in self.problems],
        }


def _problem_json(p: ValidationError) -> dict[str, Any]:
    out = {"field": p.field, "expected": p.expected, "got": p.got}
    if isinstance(p, Problem | Rejection):  # a Rejection: from the model's own encoder
        out["code"] = p.code
    return out


class Problem(ValidationError):
    """One broken rule of the contract in a request: ``code``, ``index`` (the event's
    position in an envelope, None for a single event or the whole body) and
    ``event_field`` (the contract's field, inside the event); ``field`` is the
    request's path of it (``events[3].features.age``).

    >>> p = Problem("features.empty", "events[1]", 1)
    >>> p.field, p.event_field, p.code, p.index
    ('events[1].features', 'features', 'features.empty', 1)
    """

    def __init__(self, code: str, path: str | None, index: int | None, **facts: Any) -> None:
        event_field, expected, got = render(code, **facts)
        if path is None:  # the whole body: the field as the contract names it
            field_ = event_field
        elif code == "event.not_object":
            field_ = path
        else:
            field_ = f"{path}.{event_field}"
        super().__init__(field_, expected, got)
        self.code = code
        self.index = index
        self.event_field = event_field


@dataclass(frozen=True)
class EventBatch:
    """Events decoded from JSON: their ``features`` mappings and optional ids."""

    features: list[Mapping[str, Any]]
    ids: list[Any] = field(default_factory=list)
    single: bool = False

    def __len__(self) -> int:
        return len(self.features)


@dataclass(frozen=True)
class ColumnBatch:
    """Events decoded from Arrow: feature name to a pyarrow array, ``n_rows`` rows."""

    columns: dict[str, Any]
    n_rows: int

    def __len__(self) -> int:
        return self.n_rows


def _got(value: Any) -> str:
    """A value of a request the protocols' own fields name (``streamlearn.serving.protocols``),
    as JSON; an event's values are shown as the contract shows them."""
    try:
        text = orjson.dumps(value, default=repr).decode() if value is not None else "null"
    except TypeError:  # nested deeper than orjson writes (the request parsed it, up to 1024)
        return "a deeply nested value"
    return text if len(text) <= 60 else text[:57] + "..."


def _check_feature(
    name: str, value: Any, path: str, index: int | None, problems: list[ValidationError]
) -> None:
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):
            problems.append(
                Problem("features.not_finite", path, index, name=name, value=value)
            )
        return
    if kind is int or kind is str or kind is bool:
        return
    if kind is list:
        for item in value:
            if type(item) is not str:
                problems.append(
                    Problem("features.bad_list_item", path, index, name=name, value=item)
                )
                return
        return
    problems.append(Problem("features.bad_value", path, index, name=name, value=value))


def _meta_ok(event: dict) -> bool:
    """The fields besides ``features`` are those of an event, each valid (null: absent)."""
    if not EVENT_KEYS.issuperset(event):
        return False
    for name, kind in FIELD_KINDS.items():
        value = event.get(name)
        if value is not None and not field_ok(kind, value):
            return False
    return True


def _check_meta(event: dict, path: str, index: int | None, problems: list[ValidationError]) -> None:
    """Check an event's fields besides ``features`` (a label is ignored), in the
    contract's order (``FIELD_KINDS``)."""
    for name, kind in FIELD_KINDS.items():
        value = event.get(name)
        if value is not None and not field_ok(kind, value):
            problems.append(Problem(f"{name}.invalid", path, index, value=value))


def _check_event(
    event: Any, path: str, index: int | None, problems: list[ValidationError]
) -> Mapping[str, Any]:
    """Every rule an event breaks, in the contract's order (the first is the one the
    training decoder names)."""
    if type(event) is not dict:
        problems.append(Problem("event.not_object", path, index, value=event))
        return {}
    if not EVENT_KEYS.issuperset(event):
        for key in sorted(k for k in event if k not in EVENT_KEYS):
            problems.append(Problem("event.unknown_field", path, index, name=key))
    features = event.get("features")
    if features is None:
        problems.append(Problem("features.missing", path, index))
        features = {}
    elif type(features) is not dict:
        problems.append(Problem("features.not_object", path, index, value=features))
        features = {}
    elif not features:
        problems.append(Problem("features.empty", path, index))
    elif len(features) > MAX_FEATURES:
        problems.append(Problem("features.too_many", path, index, count=len(features)))
        features = {}
    for name, value in features.items():
        if name == "":  # the hasher has no slot for it
            problems.append(Problem("features.empty_name", path, index))
        else:
            _check_feature(name, value, path, index, problems)
        if len(problems) >= MAX_PROBLEMS:
            break
    if len(event) != 1 or "features" not in event:
        _check_meta(event, path, index, problems)
    return features


def _plain_event(event: Any) -> dict | None:
    if type(event) is not dict:
        return None
    features = event.get("features")
    if type(features) is not dict or not features or len(features) > MAX_FEATURES:
        return None
    if len(event) > 1 and not _meta_ok(event):
        return None
    return features


def plain_features(doc: Any, max_events: int) -> tuple[list[dict], bool] | None:
    """The ``features`` of each event of a decoded JSON body, and whether the
    body was a single event, when its *shape* is valid (an event or an
    envelope of at most ``max_events``, every field but the feature values
    checked, no event without features); ``None`` otherwise.

    The feature values are not checked here: the fast path that consumes them
    refuses anything but plain values, and the caller then runs
    :func:`check_json`, which names every bad field.

    >>> plain_features({"features": {"age": 31}, "id": "e-1"}, max_events=10)
    ([{'age': 31}], True)
    >>> plain_features({"events": [{"features": {"a": "x"}}, {"features": {"b": 1}}]}, 10)
    ([{'a': 'x'}, {'b': 1}], False)
    >>> plain_features({"events": [{"features": {"a": "x"}}, {"features": {}}]}, 10) is None
    True
    >>> plain_features({"events": [{"feature": {}}]}, max_events=10) is None
    True
    >>> plain_features({"events": []}, max_events=10) is None  # refused: no event
    True
    """
    if type(doc) is not dict:
        return None
    if "features" in doc:
        features = _plain_event(doc)
        return None if features is None else ([features], True)
    events = doc.get("events")
    if len(doc) != 1 or type(events) is not list or not 0 < len(events) <= max_events:
        return None
    out = []
    for event in events:
        if type(event) is dict and len(event) == 1:
            features = event.get("features")
            if type(features) is not dict or not features or len(features) > MAX_FEATURES:
                return None
        else:
            features = _plain_event(event)
            if features is None:
                return None
        out.append(features)
    return out, False


def load_json(body: bytes) -> Any:
    """Decode a JSON body; raises :class:`BadRequest` (400) if it is not JSON.

    >>> load_json(b'{"features": {"age": 31}}')
    {'features': {'age': 31}}
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        problem = Problem("message.not_json", None, None, detail=str(exc))
        problem.field = "body"
        raise BadRequest([problem], 400) from None


def parse_json(body: bytes, max_events: int) -> EventBatch:
    """Decode a JSON prediction request; raises :class:`BadRequest` naming each bad field.

    Examples
    --------
    >>> batch = parse_json(b'{"features": {"age": 31, "country": "FR"}}', max_events=10)
    >>> batch.single, batch.features
    (True, [{'age': 31, 'country': 'FR'}])
    >>> try:
    ...     parse_json(b'{"events": [{"features": {"age": [1]}}]}', max_events=10)
    ... except BadRequest as err:
    ...     print(err.status, err)
    422 field `events[0].features.age`: expected a list of strings, got an item 1
    """
    return check_json(load_json(body), max_events)


def check_json(doc: Any, max_events: int) -> EventBatch:
    """Validate a decoded JSON prediction request (see :func:`parse_json`).

    >>> check_json({"events": [{"features": {"age": 31}, "ts": 5}]}, max_events=10).features
    [{'age': 31}]
    """
    problems: list[ValidationError] = []
    if type(doc) is dict and "events" in doc and "features" not in doc:
        events = doc["events"]  # an envelope's other fields are ignored
        if type(events) is not list:
            raise BadRequest([Problem("events.not_list", None, None, value=events)])
        if not events:
            raise BadRequest([Problem("events.empty", None, None)])
        if len(events) > max_events:
            raise BadRequest(
                [Problem("events.too_many", None, None, count=len(events), max_events=max_events)],
                413,
            )
        features = []
        for i, event in enumerate(events):
            features.append(_check_event(event, f"events[{i}]", i, problems))
            if len(problems) >= MAX_PROBLEMS:
                break
        if problems:
            raise BadRequest(problems[:MAX_PROBLEMS])
        return EventBatch(features, [e.get("id") for e in events])
    if type(doc) is not dict:
        raise BadRequest([Problem("event.not_object", "body", None, value=doc)])
    features_one = _check_event(doc, "event", None, problems)
    if problems:
        raise BadRequest(problems[:MAX_PROBLEMS])
    return EventBatch([features_one], [doc.get("id")], single=True)


def check_arrow(body: bytes, max_events: int, max_decoded_bytes: int) -> Declared:
    """Refuse an Arrow IPC stream from its headers alone, before anything is decoded.

    Raises :class:`BadRequest`: 400 when the framing or a header does not hold
    together, 413 when the stream declares more than ``max_events`` rows, more
    than ``max_decoded_bytes`` of buffers once decompressed, or (past
    ``RATIO_FLOOR`` bytes) more than ``MAX_RATIO`` times its own size.

    >>> import pyarrow as pa
    >>> table = pa.table({"age": list(range(100))})
    >>> sink = pa.BufferOutputStream()
    >>> with pa.ipc.new_stream(sink, table.schema) as writer:
    ...     writer.write_table(table)
    >>> check_arrow(sink.getvalue().to_pybytes(), 100, 1 << 20).rows
    100
    >>> try:
    ...     check_arrow(sink.getvalue().to_pybytes(), 10, 1 << 20)
    ... except BadRequest as err:
    ...     print(err.status, err)
    413 field `body`: expected at most 10 rows per request, got 100 rows declared
    """
    try:
        declared = declared_sizes(body)
    except UnreadableStream as exc:
        raise BadRequest(
            [ValidationError("body", "an Arrow IPC stream", f"unreadable ({exc})")], 400
        ) from None
    if declared.rows > max_events:
        raise BadRequest(
            [
                ValidationError(
                    "body",
                    f"at most {max_events} rows per request",
                    f"{declared.rows} rows declared",
                )
            ],
            413,
        )
    if declared.decoded_bytes > max_decoded_bytes:
        raise BadRequest(
            [
                ValidationError(
                    "body",
                    f"at most {max_decoded_bytes} bytes of Arrow buffers once decompressed",
                    f"{declared.decoded_bytes} bytes declared",
                )
            ],
            413,
        )
    if declared.decoded_bytes > RATIO_FLOOR and declared.decoded_bytes > MAX_RATIO * len(body):
        raise BadRequest(
            [
                ValidationError(
                    "body",
                    f"a compression ratio of at most {MAX_RATIO}:1 past {RATIO_FLOOR} bytes",
                    f"{declared.decoded_bytes} bytes declared in {len(body)}",
                )
            ],
            413,
        )
    return declared


def parse_arrow(body: bytes, max_events: int, max_decoded_bytes: int | None = None) -> ColumnBatch:
    """Decode an Arrow IPC stream whose columns are features, one row per event.

    Numeric, boolean, string (plain or dictionary-encoded) and list-of-string
    columns are accepted; nulls mean the feature is absent for that event, and
    a row with every column null is an event without features, refused as
    training refuses it.

    The stream is checked in three steps, each before the next reads anything:
    its headers (:func:`check_arrow`: declared rows, decompressed size, ratio;
    ``max_decoded_bytes`` defaults to ``MAX_RATIO`` times the body's size), then
    every buffer by ``validate(full=True)`` (offsets, UTF-8, dictionary
    indices: a corrupt buffer is a 400, never a read out of bounds), then the
    column types and values.

    Examples
    --------
    >>> import pyarrow as pa
    >>> table = pa.table({"age": [31, None], "country": ["FR", "DE"]})
    >>> sink = pa.BufferOutputStream()
    >>> with pa.ipc.new_stream(sink, table.schema) as writer:
    ...     writer.write_table(table)
    >>> batch = parse_arrow(sink.getvalue().to_pybytes(), max_events=10)
    >>> batch.n_rows, sorted(batch.columns)
    (2, ['age', 'country'])
    """
    if max_decoded_bytes is None:
        max_decoded_bytes = max(RATIO_FLOOR, MAX_RATIO * len(body))
    check_arrow(body, max_events, max_decoded_bytes)
    return decode_arrow(body, max_events)


def decode_arrow(body: bytes, max_events: int) -> ColumnBatch:
    """:func:`parse_arrow` after :func:`check_arrow` has passed: decode, validate
    every buffer, then check the columns."""
    import pyarrow as pa

    try:
        table = pa.ipc.open_stream(body).read_all()
        table.validate(full=True)
        names = table.column_names  # UnicodeDecodeError (a ValueError) for non-UTF-8 names
    except (pa.ArrowException, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        # whatever pyarrow makes of bytes it cannot read (ArrowKeyError for a
        # dictionary never sent, ...) is the body's fault, never a 500
        raise BadRequest(
            [ValidationError("body", "an Arrow IPC stream", f"unreadable ({str(exc)[:80]})")], 400
        ) from None
    if table.num_rows > max_events:
        raise BadRequest(
            [
                ValidationError(
                    "body", f"at most {max_events} rows per request", f"{table.num_rows} rows"
                )
            ],
            413,
        )
    problems: list[ValidationError] = []
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        problems.append(
            ValidationError(f"columns.{dupes[0]}", "each feature column once", "a repeated column")
        )
    if "" in names:  # training's rule and words (streamlearn.events)
        problems.append(ValidationError("columns", EMPTY_NAME_EXPECTED, EMPTY_NAME_GOT))
    columns: dict[str, Any] = {}
    kinds = arrow_kinds()
    for name, chunked in zip(names, table.columns, strict=True):
        if chunked.num_chunks == 1:
            column = chunked.chunk(0)
        elif chunked.num_chunks:
            column = pa.concat_arrays(chunked.chunks)
        else:
            column = pa.array([], chunked.type)
        kind = column.type
        tid = kind.id
        if tid in kinds.floats:
            if tid == kinds.half_float:  # numpy has it, pyarrow's kernels mostly not
                column = column.cast(pa.float32())
            if len(column) > column.null_count and not _all_finite(column):
                problems.append(
                    ValidationError(f"columns.{name}", "finite numbers", "NaN or infinity")
                )
        elif tid in kinds.integers or tid == kinds.boolean or tid in kinds.strings:
            pass
        elif tid == kinds.dictionary and kind.value_type.id in kinds.strings:
            pass  # dictionary-encoded strings stay so: the encoders use the dictionary
        elif tid in kinds.lists and kind.value_type.id in kinds.strings:
            pass
        else:
            problems.append(ValidationError(f"columns.{name}", FEATURE_EXPECTED, str(kind)))
        columns[name] = column
    empty = _first_empty_row(columns, table.num_rows)
    if empty is not None:
        problems.append(
            ValidationError(
                f"events[{empty}].features",
                NO_FEATURE_EXPECTED,
                f"{NO_FEATURE_GOT} (every column null in row {empty})",
            )
        )
    if problems:
        raise BadRequest(problems[:MAX_PROBLEMS])
    return ColumnBatch(columns, table.num_rows)


def _first_empty_row(columns: Mapping[str, Any], n_rows: int) -> int | None:
    """The first row where every column is null (an event without features), if any."""
    if not n_rows:
        return None
    present = None
    for column in columns.values():
        if column.null_count == 0:  # the usual case: every row has this feature
            return None
    import pyarrow.compute as pc

    for column in columns.values():
        valid = column.is_valid()
        present = valid if present is None else pc.or_(present, valid)
    if present is None:  # no column at all
        return 0
    first = pc.index(present, False).as_py()
    return None if first < 0 else first


def _all_finite(column: Any) -> bool:
    import numpy as np

    if column.null_count:
        column = column.drop_null()  # fill_null(0) has no half-float scalar
    return bool(np.isfinite(column.to_numpy(zero_copy_only=False)).all())
