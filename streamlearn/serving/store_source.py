"""The model store as a :class:`~streamlearn.serving.model.ModelSource`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streamlearn.serving.model import Predictor

__all__ = ["StoreSource"]


class StoreSource:
    """Serve the versions of one model of a :class:`~streamlearn.store.ModelStore`.

    Parameters
    ----------
    store
        A store URI or path, or an open ``ModelStore``.
    model
        The model's name in the store.
    loader
        Turns a loaded ``ModelVersion`` into a :class:`Predictor`; by default
        :func:`streamlearn.serving.learner_predictor.predictor_from_version`,
        which rebuilds the learner from the version's ``ModelState``.

    Examples
    --------
    >>> import tempfile
    >>> source = StoreSource(tempfile.mkdtemp(), "ctr")
    >>> source.serving_version() is None, source.versions()
    (True, [])
    """

    def __init__(
        self,
        store: Any,
        model: str,
        *,
        loader: Callable[[Any], Predictor] | None = None,
    ) -> None:
        from streamlearn.store import ModelStore

        if isinstance(store, ModelStore):
            self.store = store if store.model == model else store.with_model(model)
        else:
            self.store = ModelStore(store, model)
        if loader is None:
            from streamlearn.serving.learner_predictor import predictor_from_version

            loader = predictor_from_version
        self._loader = loader

    @property
    def name(self) -> str:
        return self.store.model

    def serving_version(self) -> int | None:
        """The pinned version if any, else the latest; one small read of ``HEAD.json``."""
        return self.store.head().current

    def load(self, version: int) -> Predictor:
        """Read ``version`` from the store and build its predictor."""
        return self._loader(self.store.get(version))

    def versions(self) -> list[dict[str, Any]]:
        """Every version with lineage and status, oldest first."""
        return [info.to_dict() for info in self.store.list()]
