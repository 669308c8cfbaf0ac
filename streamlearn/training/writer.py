"""The model's one writer, from ``streamlearn train`` to the job's merger.

``streamlearn train`` takes the model's writer lease (``ModelStore.acquire_writer``)
before it starts the job, with a ``job.writer_id`` generated once per start and
carried in the job's configuration. The job takes it again with the same id
before it reads where to resume, and the job's merger takes it once more when it
opens (at every restart too): each acquisition by the same id gets a newer token,
which fences out the one before. So the lease is held from the moment the command
starts, a second trainer on the model is refused up front (``WriterBusy``, naming
this one), and a writer that another took over from cannot commit any more.

:class:`HandOver` holds a lease until the next holder of the same id takes over:
it renews the lease while no newer token exists, and steps aside (without
releasing: the lease now belongs to the next holder) once one does.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from streamlearn.store.lease import WriterFenced, WriterInfo

__all__ = ["HandOver"]

log = logging.getLogger(__name__)


class HandOver:
    """The writer lease of ``writer_id`` on ``store``'s model, held until the job takes it.

    Acquiring raises :class:`~streamlearn.store.lease.WriterBusy` while another
    writer's lease is live.

    >>> import tempfile
    >>> from streamlearn.store import ModelStore
    >>> store = ModelStore(tempfile.mkdtemp(), "m")
    >>> cli = HandOver(store, "train-m-1", 30000)
    >>> cli.poll()
    'holding'
    >>> merger = store.acquire_writer("train-m-1", 30000)   # the job's merger opens
    >>> cli.poll(), cli.lease.released, store.writer().live()
    ('handed over', True, True)
    >>> _ = store.acquire_writer("other", force=True)          # someone took the model over
    >>> cli.poll(), cli.taken_by.writer_id
    ('taken', 'other')
    """

    def __init__(self, store: Any, writer_id: str, lease_ms: int) -> None:
        self.store = store
        self.writer_id = writer_id
        self.lease = store.acquire_writer(writer_id, lease_ms)
        self.state = "holding"
        #: the other writer that holds the model now (state ``taken``)
        self.taken_by: WriterInfo | None = None
        self._renewed = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> str:
        """Renew, or notice a hand-over or a takeover; returns the state.

        ``holding``: this lease is the newest and renewed when due; ``handed over``:
        a newer lease of the same writer id (the job) holds the model; ``taken``:
        another writer's lease is the newest (:attr:`taken_by` names it).
        """
        newest = self.store.writer()
        if newest is None:
            return self.state
        if newest.writer_id != self.writer_id and newest.state != "lost" and (
            newest.token > self.lease.token
        ):
            self._step_aside()
            self.state, self.taken_by = "taken", newest
        elif self.state == "holding" and newest.token > self.lease.token:
            self._step_aside()
            self.state = "handed over"
        elif self.state == "holding":
            due = self.lease.info.lease_ms / 3000
            if time.monotonic() - self._renewed >= due:
                try:
                    self.lease.renew()
                except WriterFenced:
                    return self.poll()  # a newer token appeared meanwhile: whose?
                self._renewed = time.monotonic()
        return self.state

    def _step_aside(self) -> None:
        """Stop renewing. A lease with a newer token is fenced, so releasing it is a
        no-op in the store: the newer holder keeps the model."""
        if not self.lease.released:
            self.lease.release()

    def keep_alive(self, every_s: float = 1.0) -> None:
        """:meth:`poll` from a daemon thread until the job takes over (or :meth:`stop`)."""

        def loop() -> None:
            while not self._stop.wait(every_s):
                try:
                    if self.poll() != "holding":
                        return
                except Exception as exc:  # the store briefly away: try again next time
                    log.debug("writer lease of %r not renewed: %s", self.writer_id, exc)

        self._thread = threading.Thread(target=loop, name="writer-handover", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
