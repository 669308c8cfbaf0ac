"""Class labels of classifiers: validation and coding to column numbers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamlearn.errors import ConfigError, ValidationError

__all__ = ["ClassIndex"]

_LABEL_KINDS = "a class label (a string, an integer or true/false)"


def _plain(label: object) -> object:
    """Numpy scalars to Python ones; refuse what cannot name a class."""
    if isinstance(label, np.generic):
        label = label.item()
    if type(label) not in (str, int, bool):
        raise ValidationError("label", _LABEL_KINDS, repr(label))
    return label


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
        if isinstance(ys, np.ndarray):
            ys = ys.tolist()  # Python scalars: numpy ones are slow dict keys
        index = self._index
        codes = list(map(index.get, ys)) if len(index) else [None] * len(ys)
        added: list[object] = []
        if None in codes:
            index = dict(index)  # committed only once every label is valid
            for j, c in enumerate(codes):
                if c is not None:
                    continue
                y = ys[j]
                try:
                    label = _plain(y)
                except ValidationError as exc:
                    raise ValidationError("label", exc.expected, exc.got, f"event {j}") from exc
                got = index.get(label)
                if got is None:
                    if not self.grow:
                        raise ValidationError(
                            "label", f"one of {self.classes}", repr(y), f"event {j}"
                        )
                    got = index[label] = len(self.classes) + len(added)
                    added.append(label)
                codes[j] = got
            self._index = index
            self.classes.extend(added)
        return np.array(codes, dtype=np.int64), added
