"""The event contract, written once: fields, tasks, limits, label rules, hashing, rejections.

Every implementation of an event (the training decoder :mod:`streamlearn.events`, serving's
validation :mod:`streamlearn.serving.request_body` and its C fast path, the feature hasher
:mod:`streamlearn.features`, and the JVM encoder) takes its rules from here, and the
conformance corpus (:mod:`streamlearn.contract.corpus`) is generated from the executable
reading of these rules in :mod:`streamlearn.contract.reference`. See ``docs/contract.md``.

A rejection has a stable **code** (``features.not_finite``, ``label.missing``, ...) and a
**field** path inside its event (``features.age``); the human text is rendered from the code
in one place, :func:`message`:

>>> message("features.not_finite", name="age", value=float("nan"), index=2)
'field `features.age` of event 2: expected a finite number, got NaN'
>>> message("label.missing", task="binary")
'field `label`: expected a label (0/1 or true/false), got nothing'
>>> sorted(RULES)[:3]
['event.not_object', 'event.unknown_field', 'events.empty']

:class:`Rejection` is the error object an implementation raises: an
:class:`~streamlearn.errors.EventError` that also carries its ``code`` and ``index``.

>>> err = Rejection("features.too_many", index=None, count=10_001)
>>> err.code, err.field, str(err)
('features.too_many', 'features', 'field `features`: expected at most 10000 features, got 10001')
"""

from __future__ import annotations

import decimal
import json
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from streamlearn.errors import EventError

__all__ = [
    "CROSS_LIMIT",
    "ENVELOPE_FIELD",
    "EVENT_FIELDS",
    "FIELD_KINDS",
    "HASH",
    "LABEL_EXPECTED",
    "MAX_BITS",
    "MAX_FEATURES",
    "MAX_WEIGHT",
    "OPTIONAL_FIELDS",
    "RULES",
    "Rejection",
    "Rule",
    "TASKS",
    "check_crosses",
    "cross_entry",
    "event_weight",
    "feature_name",
    "field_ok",
    "message",
    "render",
    "show",
    "show_float",
]

# -- the event ---------------------------------------------------------------------------------

#: An event is a JSON object with these fields and no other; ``features`` is required.
EVENT_FIELDS = ("features", "id", "key", "label", "ts", "weight")
#: The optional ones, and what each holds (the check is the rule of the same name below).
OPTIONAL_FIELDS = {
    "label": "the target; required by training, ignored when scoring (see LABEL_EXPECTED)",
    "key": "a string or an integer (true/false read as one): the entity the event is about",
    "ts": "event time in milliseconds since the epoch, an integer >= 0",
    "id": "a string or an integer (true/false read as one) naming the event",
    "weight": "the event's importance, a finite number >= 0 (default 1) that multiplies its "
    "gradient when learned (0: scored, not learned); scoring and serving ignore it",
}
# A null optional field is an absent one.
#: The optional fields checked by their kind alone (the label has the task's rules), in the
#: order they are checked; a field that breaks its kind is rejected as ``<name>.invalid``.
#: A new such field is one line here and its rule in RULES: every decoder loops over this
#: table (the JVM's copy is generated), and the JVM's scanner leaves a field it does not
#: know to its complete path.
FIELD_KINDS = {"key": "name", "ts": "time", "id": "name", "weight": "weight"}
#: The largest weight: the largest double (an integer beyond it has no float to multiply by).
MAX_WEIGHT = sys.float_info.max


def field_ok(kind: str, value: Any) -> bool:
    """Whether ``value`` (not null) is of the field kind ``kind``: ``"name"`` a string or
    an integer (true/false read as one), ``"time"`` an integer >= 0, ``"weight"`` a number
    (not true/false) from 0 to :data:`MAX_WEIGHT` (so finite).

    >>> field_ok("name", "u-1"), field_ok("name", 2.5), field_ok("time", -1)
    (True, False, False)
    >>> field_ok("weight", 0), field_ok("weight", 2.5), field_ok("weight", True)
    (True, True, False)
    >>> field_ok("weight", -0.5), field_ok("weight", float("nan")), field_ok("weight", 10**400)
    (False, False, False)
    """
    kind_of = type(value)
    if kind == "name":
        return kind_of is str or kind_of is int or kind_of is bool
    if kind == "time":
        return kind_of is int and value >= 0
    if kind == "weight":  # NaN compares false: refused
        return (kind_of is int or kind_of is float) and 0 <= value <= MAX_WEIGHT
    raise KeyError(f"no field kind {kind!r}")


def event_weight(event: dict) -> float:
    """The weight an event (already checked) learns with: its ``weight``, 1 when absent or
    null.

    >>> event_weight({"features": {"x": 1}}), event_weight({"features": {}, "weight": 3})
    (1.0, 3.0)
    """
    weight = event.get("weight")
    return 1.0 if weight is None else float(weight)

#: A message is one event, or an envelope: an object with ``events`` (a non-empty list of
#: events) and without ``features``. An envelope's other fields are ignored.
ENVELOPE_FIELD = "events"

#: What a label is, per task. ``binary`` labels are read as the integer 0 or 1 (true/false
#: and 0.0/1.0 too); ``regression`` takes a finite number as given; ``multiclass`` a
#: non-empty string or an integer, as given.
TASKS = ("regression", "binary", "multiclass")
LABEL_EXPECTED = {
    "regression": "a finite number",
    "binary": "a label (0/1 or true/false)",
    "multiclass": "a class name (string) or an integer class",
}

# -- limits ------------------------------------------------------------------------------------

#: Events with more features than this are rejected (protects memory); the decoders take it
#: as their default ``max_features``.
MAX_FEATURES = 10_000
#: Hashed features go to ``2**bits`` slots, ``bits`` from 1 to MAX_BITS.
MAX_BITS = 30

# -- feature values and names ------------------------------------------------------------------
#
# value            entries                                   entry value        numeric
# number           the slot of the name                      sign * number      yes
# true / false     the slot of the name                      sign * 1 / 0       no
# string           the slot of name=value (one-hot)          sign               no
# list of strings  one slot per name=item (an empty list: none) sign each       no
# a dense name (a number or true/false only) has its own slot 2**bits + position, sign +1.
#
# Names are non-empty strings. JSON keys are always strings. Where an event arrives as Python
# objects (the SDK's publish, a learner's learn_one), an integer name (River's streams use
# them) is the feature named by its decimal text, as JSON would carry it: 3 and "3" are the
# same feature. A name of any other type is rejected (features.name_not_string).


def feature_name(name: Any) -> str | None:
    """The feature name ``name`` stands for, or None when it is not a valid name.

    >>> feature_name("age"), feature_name(3), feature_name(True), feature_name("")
    ('age', '3', None, None)
    """
    kind = type(name)
    if kind is str:
        return name or None
    if kind is int:
        return str(name)
    return None


# -- hashing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Hash:
    """The definition of feature hashing (``streamlearn.features.feature_slot``).

    ``name_hash = le64(BLAKE2b-64(utf8(name), person=name_person)) & (2**53 - 1)``;
    ``value_hash`` is 0 for a number or boolean, else the same of the string value with
    ``value_person`` (and 1 if that is 0); ``h = fmix64((name_hash * golden mod 2**64) ^
    value_hash)`` (murmur3's finaliser with ``mix_1``, ``mix_2``, shifts of 33); the slot is
    ``h & (2**bits - 1)`` and the sign is -1 when bit 63 of ``h`` is set, else +1.
    """

    algorithm: str = "blake2b"
    digest_size: int = 8
    name_person: bytes = b"sl.name"
    value_person: bytes = b"sl.value"
    bits: int = 53
    golden: int = 0x9E3779B97F4A7C15
    mix_1: int = 0xFF51AFD7ED558CCD
    mix_2: int = 0xC4CEB9FE1A85EC53
    shift: int = 33
    #: set in the first key of a cross (:func:`cross_entry`): no name hash (< 2**53) has it
    cross_tag: int = 1 << 60


HASH = _Hash()
_U64 = (1 << 64) - 1

# -- crosses -----------------------------------------------------------------------------------
#
# A cross ``(a, b)`` (a pair of distinct feature names, declared with the hashing: ``bits``,
# ``dense``, ``crosses``) adds to an event that has both features one entry per pair of their
# entries, like Vowpal Wabbit's ``-q``: each entry of ``a`` (in order) with each entry of ``b``
# (in order), after all the event's own entries, cross after cross in the declared order. The
# pair's slot and value come from the two entries alone (:func:`cross_entry`), so any encoder
# computes them from what it has already encoded. An absent feature, or an empty list, crosses
# to nothing. Crossed entries are not numeric (an online scaler leaves them as they are). An
# event whose crosses would add more than ``max_features`` entries is rejected
# (``features.too_many_crossed``).

#: The most crosses a hashing layout declares.
CROSS_LIMIT = 64


def cross_entry(slot_a: int, value_a: float, slot_b: int, value_b: float, bits: int
                ) -> tuple[int, float]:
    """The ``(slot, value)`` a cross adds for the entries ``(slot_a, value_a)`` of its first
    feature and ``(slot_b, value_b)`` of its second.

    ``h = fmix64(((slot_a | cross_tag) * golden mod 2**64) ^ slot_b)`` (the feature hash's
    finaliser); the slot is ``h & (2**bits - 1)``; the value is ``value_a * value_b``,
    negated when bit 63 of ``h`` is set.

    >>> cross_entry(3, 2.0, 7, -1.0, bits=8)
    (186, 2.0)
    """
    h = (((slot_a | HASH.cross_tag) * HASH.golden) & _U64) ^ slot_b
    h ^= h >> HASH.shift
    h = (h * HASH.mix_1) & _U64
    h ^= h >> HASH.shift
    h = (h * HASH.mix_2) & _U64
    h ^= h >> HASH.shift
    product = value_a * value_b
    return h & ((1 << bits) - 1), -product if h >> 63 else product


def check_crosses(value: Any) -> tuple[tuple[str, str], ...] | str:
    """``value`` read as crosses (pairs of distinct feature names, no pair twice, at most
    :data:`CROSS_LIMIT`), or what was expected when it is not (the caller names the field).

    >>> check_crosses([["user", "item"]])
    (('user', 'item'),)
    >>> check_crosses([["user", "user"]])
    'pairs of two different feature names'
    """
    pairs = []
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        return "a list of [name, name] pairs"
    for pair in value:
        if (isinstance(pair, str | bytes) or not isinstance(pair, list | tuple) or len(pair) != 2
                or not all(type(n) is str and n for n in pair)):
            return "a list of [name, name] pairs (non-empty strings)"
        if pair[0] == pair[1]:
            return "pairs of two different feature names"
        pairs.append((pair[0], pair[1]))
    if len(set(pairs)) != len(pairs):
        return "distinct pairs"
    if len(pairs) > CROSS_LIMIT:
        return f"at most {CROSS_LIMIT} pairs"
    return tuple(pairs)

# -- rejections --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One rejection: the field it names (a template over the facts), what was expected and
    what was got (templates; ``{value}`` is the offending value rendered by :func:`show`)."""

    field: str
    expected: str
    got: str
    doc: str


_NAME_EXPECTED = (
    "string feature names (an integer is read as its decimal text; convert others with str())"
)

#: Every rejection, by code. The field of a rule is relative to its event; an envelope's
#: rejections also carry the event's index (None for the whole message).
RULES: dict[str, Rule] = {
    "message.not_json": Rule(
        "message", "a JSON object (an event or an envelope)", "bad JSON ({detail})",
        "the bytes are not JSON (NaN and numbers beyond a double are not JSON either)",
    ),
    "events.not_list": Rule(
        "events", "a list of events", "{value}", "an envelope whose `events` is not a list"
    ),
    "events.empty": Rule(
        "events", "at least one event", "an empty list", "an envelope with no event"
    ),
    "events.too_many": Rule(
        "events", "at most {max_events} events per request", "{count} events",
        "a scoring request with more events than the service takes (HTTP 413)",
    ),
    "event.not_object": Rule(
        "event", "a JSON object with `features`", "{value}", "an event that is not an object"
    ),
    "event.unknown_field": Rule(
        "{name}", "only the fields " + ", ".join(EVENT_FIELDS), "an unknown field",
        "a field that is not one of EVENT_FIELDS (the first one, in sorted order)",
    ),
    "features.missing": Rule(
        "features", "an object of name → value", "nothing", "an event without `features`"
    ),
    "features.not_object": Rule(
        "features", "an object of name → value", "{value}", "`features` that is not an object"
    ),
    "features.empty": Rule(
        "features", "at least one feature", "an empty object", "`features` with no feature"
    ),
    "features.too_many": Rule(
        "features", "at most {max_features} features", "{count}",
        "more than max_features features (MAX_FEATURES by default)",
    ),
    "features.empty_name": Rule(
        "features", "non-empty string feature names", '""', "a feature named by the empty string"
    ),
    "features.name_not_string": Rule(
        "features", _NAME_EXPECTED, "{value}",
        "a name that is neither a string nor an integer (Python objects only: JSON keys are "
        "strings)",
    ),
    "features.not_finite": Rule(
        "features.{name}", "a finite number", "{value}",
        "NaN or an infinity (Python objects only: JSON has neither)",
    ),
    "features.bad_list_item": Rule(
        "features.{name}", "a list of strings", "an item {value}", "a list with a non-string item"
    ),
    "features.bad_value": Rule(
        "features.{name}", "a number, a string, a list of strings or true/false", "{value}",
        "a value of no feature kind (null, an object, ...)",
    ),
    "features.too_many_crossed": Rule(
        "features", "at most {max_features} crossed entries", "{count}",
        "crosses that would add more than max_features entries to one event",
    ),
    "features.dense_not_number": Rule(
        "features.{name}", "a number (it is a dense feature)", "{value}",
        "a dense name given a string or a non-empty list",
    ),
    "label.missing": Rule(
        "label", "{label_expected}", "nothing", "no label where labels are required (training)"
    ),
    "label.invalid": Rule(
        "label", "{label_expected}", "{value}", "a label that is not one of the task's"
    ),
    "key.invalid": Rule("key", "a string or an integer", "{value}", "a key of another type"),
    "ts.invalid": Rule(
        "ts", "event time in milliseconds (an integer >= 0)", "{value}",
        "a ts that is not an integer >= 0",
    ),
    "id.invalid": Rule("id", "a string or an integer", "{value}", "an id of another type"),
    "weight.invalid": Rule(
        "weight", "a number >= 0 (the event's importance; 1 when absent)", "{value}",
        "a weight that is negative, not a number, or beyond the largest double",
    ),
}

#: Codes checked only where labels are used: a scoring request's label is ignored.
LABEL_CODES = frozenset(("label.missing", "label.invalid"))


def render(code: str, **facts: Any) -> tuple[str, str, str]:
    """``(field, expected, got)`` of a rejection, from its code and facts.

    Facts: ``name`` (a feature or field name), ``value`` (the offending value; or ``shown``,
    a description of it), ``count``, ``detail``, ``task``, ``max_features``, ``max_events``.

    >>> render("features.bad_list_item", name="tags", value=3)
    ('features.tags', 'a list of strings', 'an item 3')
    """
    rule = RULES[code]
    values = dict(facts)
    if "shown" in values:  # the value already rendered, where only a description is at hand
        values["value"] = values.pop("shown")
    elif "value" in values:
        values["value"] = show(values["value"])
    if "task" in values:
        values["label_expected"] = LABEL_EXPECTED[values["task"]]
    values.setdefault("max_features", MAX_FEATURES)
    return (
        rule.field.format(**values),
        rule.expected.format(**values),
        rule.got.format(**values),
    )


def _where(index: int | None) -> str:
    return "" if index is None else f"event {index}"


class Rejection(EventError):
    """An event (or message) rejected under one rule: ``code``, ``field``, ``index``.

    ``str()`` is :func:`message`.
    """

    def __init__(self, code: str, index: int | None = None, **facts: Any) -> None:
        field, expected, got = render(code, **facts)
        super().__init__(field, expected, got, _where(index))
        self.code = code
        self.index = index


def message(code: str, index: int | None = None, **facts: Any) -> str:
    """The human text of a rejection: ``field `F` [of event I]: expected E, got G``."""
    return str(Rejection(code, index, **facts))


# -- how values are shown in messages ----------------------------------------------------------

_SHORT = 60  # the longest value shown; a longer one is cut to 57 characters and "..."
_DIGITS = decimal.Context(prec=20)  # repr's at most 17 digits, whatever the caller's context
_TEXT, _VALUE = True, False  # the pieces of a container: its own text, or an item to render


def _pieces(value: list | dict, comma: str, colon: str) -> Iterator[tuple[bool, Any]]:
    """A list or dict as written: its brackets and separators, and its items in their place."""
    if type(value) is list:
        yield _TEXT, "["
        for i, item in enumerate(value):
            if i:
                yield _TEXT, comma
            yield _VALUE, item
        yield _TEXT, "]"
    elif type(value) is dict:
        yield _TEXT, "{"
        for i, (key, item) in enumerate(value.items()):
            if i:
                yield _TEXT, comma
            yield _VALUE, key
            yield _TEXT, colon
            yield _VALUE, item
        yield _TEXT, "}"


def write(value: Any, scalar: Callable[[Any], str], comma: str, colon: str, limit: float) -> str:
    """``value`` written with ``scalar`` for everything but lists and dicts, which are walked
    with a stack of their own, not by recursion: any depth that JSON can bring is fine. Stops
    once at least ``limit`` characters are written."""
    if type(value) is not list and type(value) is not dict:
        return scalar(value)
    out: list[str] = []
    size = 0
    stack = [_pieces(value, comma, colon)]
    while stack and size < limit:
        piece = next(stack[-1], None)
        if piece is None:
            stack.pop()
            continue
        kind, item = piece
        if kind is _VALUE:
            if type(item) is list or type(item) is dict:
                stack.append(_pieces(item, comma, colon))
                continue
            item = scalar(item)
        out.append(item)
        size += len(item)
    return "".join(out)


def show(value: Any) -> str:
    """A value as a message shows it: written as JSON, cut to 57 characters and "..." past 60
    (characters: code points).

    The writing is JSON's own, so that every implementation writes it from this rule, not by
    imitating another language: no spaces; ``true``, ``false``, ``null``; strings in double
    quotes with JSON's escapes only (``\\"``, ``\\\\``, ``\\b``, ``\\f``, ``\\n``,
    ``\\r``, ``\\t``, other characters below U+0020 as ``\\u00xx``, everything else as it
    is: RFC 8785's escaping); integers in decimal, whole; floats by :func:`show_float`; object
    members in the order they came. Lists and objects are written only as far as the cut,
    without recursion, so a value nested hundreds deep reads as its first brackets. A
    Python value JSON has no word for (a tuple, given to the SDK) is shown by ``repr``; a
    value that ``repr`` cannot render is "a deeply nested value".

    >>> show("x" * 100)
    '"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...'
    >>> show([[[1]], {"a": None, "b": 'say "hi"'}])
    '[[[1]],{"a":null,"b":"say \\\\"hi\\\\""}]'
    """
    try:
        text = write(value, _json_scalar, ",", ":", _SHORT + 1)
    except RecursionError:
        return "a deeply nested value"
    return text if len(text) <= _SHORT else text[: _SHORT - 3] + "..."


def _json_scalar(value: Any) -> str:
    if type(value) is str:
        return json.dumps(value, ensure_ascii=False)  # RFC 8785's escapes, and only those
    if value is True or value is False or value is None:
        return "true" if value is True else "false" if value is False else "null"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return show_float(float(value))
    return repr(value)


def show_float(x: float) -> str:
    """A float as :func:`show` writes it: the fewest significant digits that read back to the
    same double, laid out as ECMAScript's ``Number::toString`` lays them out (the numbers of
    RFC 8785), except that a whole value written without an exponent keeps a ``.0`` (so a
    float is never read as an integer: ``1.0`` is not a valid ``ts``) and that the sign of a
    zero is kept; NaN and the infinities, which JSON cannot hold, as ECMAScript writes them.

    >>> [show_float(x) for x in (1.0, -2.5, 0.1, 1e-6, 1e-7, 1e20, 1e21, 123456.789, -0.0)]
    ['1.0', '-2.5', '0.1', '0.000001', '1e-7', '100000000000000000000.0', '1e+21', \
'123456.789', '-0.0']
    >>> show_float(float("nan")), show_float(float("-inf"))
    ('NaN', '-Infinity')
    """
    if x != x:
        return "NaN"
    if x in (math.inf, -math.inf):
        return "Infinity" if x > 0 else "-Infinity"
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    if x == 0:
        return sign + "0.0"
    # the shortest digits that read back to x (repr's), as d1 d2 ... dk times 10**(n - k)
    _, digit_tuple, exponent = decimal.Decimal(repr(abs(x))).normalize(_DIGITS).as_tuple()
    digits = "".join(map(str, digit_tuple))
    k = len(digits)
    n = k + int(exponent)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k) + ".0"
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    e = n - 1
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return sign + mantissa + "e" + ("+" if e >= 0 else "-") + str(abs(e))
