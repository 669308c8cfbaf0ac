"""Class labels of classifiers: validation and coding to column numbers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import repeat

import numpy as np

from streamlearn.errors import ConfigError, ValidationError

__all__ = ["ClassIndex", "columns_of"]

_LABEL_KINDS = "a class label (a string, an integer or true/false)"


def _plain(label: object) -> object:
    """Numpy scalars to Python ones; refuse what cannot name a class."""
    if isinstance(label, np.generic):
        label = label.item()
    if type(label) not in (str, int, bool):
        raise ValidationError("label", _LABEL_KINDS, repr(label))
    return label


def columns_of(ys: Sequence[object] | np.ndarray, index: Mapping[object, int]) -> np.ndarray:
    """Each label's column by ``index`` (label → column, found with Python's ==,
    so ``1`` and ``1.0`` find ``True``), or -1 for a label it does not hold.

    A numpy array of numbers against labels that are all integers or booleans
    (0/1 labels read by the training job) is compared in numpy, one pass per
    class; anything else is looked up label by label.

    >>> columns_of(np.array([1.0, 0.0, 0.5]), {False: 0, True: 1}).tolist()
    [1, 0, -1]
    >>> columns_of(["b", "z"], {"a": 0, "b": 1}).tolist()
    [1, -1]
    """
    if (isinstance(ys, np.ndarray) and ys.dtype.kind in "biuf" and index
            and all(type(c) in (bool, int) for c in index)):
        cols = np.full(len(ys), -1, dtype=np.int64)
        for label, col in index.items():
            cols[ys == label] = col
        return cols
    if isinstance(ys, np.ndarray):
        ys = ys.tolist()  # Python scalars: numpy ones are slow dict keys
    return np.fromiter(map(index.get, ys, repeat(-1)), np.int64, len(ys))


class ClassIndex:
    """Labels ↔ column numbers, fixed up front or growing as labels appear."""

    def __init__(self, classes: Sequence[object] | None, *, grow: bool) -> None:
        if classes is not None:
            if isinstance(classes, str | bytes) or not isinstance(classes, Sequence):
                raise ConfigError("classes", "a list of class labels", repr(classes))
            try:
                classes = [_plain(c) for c in classes]
            except ValidationError as exc:
                raise ConfigError("classes", _LABEL_KINDS + " each", exc.got) from exc
            if len({(type(c) is bool, c) for c in classes}) != len(classes):
                raise ConfigError("classes", "distinct labels", repr(classes))
        self.classes: list[object] = list(classes or [])
        self.grow = grow
        self._index = {c: i for i, c in enumerate(self.classes)}

    def code(self, ys: Sequence[object] | np.ndarray) -> tuple[np.ndarray, list[object]]:
        """Column number of each label, and the labels newly added (if growing)."""
        codes = columns_of(ys, self._index)
        added: list[object] = []
        unknown = np.flatnonzero(codes < 0)
        if len(unknown):
            index = dict(self._index)  # committed only once every label is valid
            for j in unknown.tolist():
                y = ys[j]
                try:
                    label = _plain(y)
                except ValidationError as exc:
                    raise ValidationError("label", exc.expected, exc.got, f"event {j}") from exc
                got = index.get(label)
                if got is None:
                    if not self.grow:
                        raise ValidationError(
                            "label", f"one of {self.classes}", repr(label), f"event {j}"
                        )
                    got = index[label] = len(self.classes) + len(added)
                    added.append(label)
                codes[j] = got
            self._index = index
            self.classes.extend(added)
        return codes, added
