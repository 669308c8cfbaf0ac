"""The model store as a :class:`~streamlearn.serving.model.ModelSource`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from streamlearn.serving.model import Predictor, Step

__all__ = ["StoreSource"]

_REREAD_S = 1.0  # read HEAD.json at least this often even when its stat says unchanged


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
        import pyarrow.fs as pafs

        # On a local disk, <root>/<model>/HEAD.json (the store's documented layout)
        # is replaced by a rename on every change, so its stat tells whether it
        # changed: one system call per poll instead of open, read and close, each
        # of which hands the interpreter lock back and forth with the server's
        # event loop.
        local = isinstance(self.store.filesystem, pafs.LocalFileSystem)
        self._head_path = f"{self.store.root}/{self.store.model}/HEAD.json" if local else None
        self._head_stat: tuple[int, ...] | None = None
        self._head_version: int | None = None
        self._head_read_at = 0.0

    @property
    def name(self) -> str:
        return self.store.model

    def serving_version(self) -> int | None:
        """The pinned version if any, else the latest: one small read of
        ``HEAD.json``, or on a local disk one ``stat`` of it while it is
        unchanged (and a read at least once a second whatever the stat says).

        >>> import tempfile, pyarrow as pa
        >>> from streamlearn.store import Lineage, ModelStore
        >>> store = ModelStore(tempfile.mkdtemp(), "ctr")
        >>> source = StoreSource(store, "ctr")
        >>> source.serving_version() is None
        True
        >>> store.commit(pa.table({"w": [0.0]}), Lineage(events=0))
        1
        >>> source.serving_version(), source.serving_version()
        (1, 1)
        >>> store.pin(1); store.commit(pa.table({"w": [1.0]}), Lineage(events=1))
        2
        >>> source.serving_version()
        1
        """
        path = self._head_path
        if path is None:
            return self.store.head().current
        try:
            st = os.stat(path)
            key: tuple[int, ...] | None = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        except OSError:  # not committed yet, or being replaced: read it as before
            key = None
        now = time.monotonic()
        if key is not None and key == self._head_stat and now - self._head_read_at < _REREAD_S:
            return self._head_version
        # the stat comes before the read: a change after the stat shows in the next stat
        version = self.store.head().current
        self._head_stat, self._head_version, self._head_read_at = key, version, now
        return version

    def load(self, version: int) -> Predictor:
        """Read ``version`` from the store and build its predictor.

        The predictor keeps its own copy of the model, so the store handle's
        materialised copy is dropped (a second model in memory otherwise).
        """
        try:
            return self._loader(self.store.get(version))
        finally:
            self.store.drop_cache()

    def advance(self, since: int, upto: int) -> Step:
        """What a predictor holding ``since`` needs to serve ``upto``: the
        union of the deltas between them (read from the deltas alone,
        O(changes)) with ``upto``'s commit time and lineage, or a reason to
        load ``upto`` whole (:meth:`ModelStore.changes`). A delta file missing
        or damaged raises :class:`~streamlearn.store.BrokenChain` naming the
        model and version.

        >>> import tempfile, numpy as np
        >>> from streamlearn.learners import LinearRegression
        >>> from streamlearn.store import Changes, ModelStore
        >>> store = ModelStore(tempfile.mkdtemp(), "price")
        >>> state = LinearRegression(bits=4).state()
        >>> v1 = store.commit(state)
        >>> state.arrays["weights"][3] = 0.5
        >>> v2 = store.commit_delta(Changes.gather(state, [3]), parent=v1)
        >>> step = StoreSource(store, "price").advance(v1, v2)
        >>> step.version, step.reload, step.changes.slots.tolist()
        (2, None, [3])
        >>> store.rollback(v1); StoreSource(store, "price").advance(v2, 3).reload
        3
        'version 3 is a snapshot (rollback): load version 3 whole'
        """
        update = self.store.changes(since, upto)
        if update.reload is not None:
            return Step(since, update.version, reload=update.reload)
        lineage = self.store.info(update.version).lineage
        return Step(
            since,
            update.version,
            changes=update.changes,
            created_at=float(lineage.created_at or 0.0),
            lineage=lineage.to_dict(),
        )

    def versions(self) -> list[dict[str, Any]]:
        """Every version with lineage and status, oldest first."""
        return [info.to_dict() for info in self.store.list()]

    def models(self) -> list[str]:
        """The names of the models the store holds (those with a version), for
        the hint a server gives while its own model has none.

        >>> import tempfile
        >>> StoreSource(tempfile.mkdtemp(), "ctr").models()
        []
        """
        return self.store.models()
