"""One writer per model: a lease with an expiry and a fencing token.

A writer (the training job's merger) takes the model's lease with
:meth:`ModelStore.acquire_writer <streamlearn.store.ModelStore.acquire_writer>`,
renews it while it runs and releases it when it stops. Each acquisition gets a
*token* one higher than any before it, and every version the writer commits
carries that token in its commit record. A commit with a token lower than the
newest one is refused (:class:`WriterFenced`): a writer that was paused or cut
off while another took over (a "zombie") cannot commit any more.

The lease is a set of small JSON files, one per acquisition, named
``writer/<token, 12 digits>-<nonce>.json``, each written only by the process
that created it. The newest token is the largest number among the names. An
acquisition writes its file for ``newest + 1`` and then lists ``writer/``: it
won if no *other* file has a token as large as its own. Two rivals cannot both
win: each writes before it lists, so whichever lists last sees the other's file
(this needs only that a listing shows every object whose upload completed
before it began, which local directories and S3 since December 2020 give; no
conditional write, which pyarrow does not offer on S3). Both may lose (each
sees the other); they mark their files ``lost`` and retry after a random pause.
``docs/store.md`` states the format and the argument in full.
"""

from __future__ import annotations

import logging
import os
import random
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Protocol

import orjson

from streamlearn.errors import StoreError, ValidationError

__all__ = ["Lease", "WriterInfo", "LeaseError", "WriterBusy", "WriterFenced", "DEFAULT_LEASE_MS"]

logger = logging.getLogger(__name__)

DEFAULT_LEASE_MS = 30_000
LEASE_FORMAT = 1
_CLAIM = re.compile(r"(\d{12})-([0-9a-f]{12})\.json")
ACQUIRE_ATTEMPTS = 20
_WRITER_ID = re.compile(r"[A-Za-z0-9._:@/-]{1,200}")


class LeaseError(StoreError):
    """The model's single-writer lease refused an operation (never worth retrying as is)."""

    retriable = False


class WriterBusy(LeaseError):
    """Another writer holds a live lease on the model; ``holder`` says who."""

    def __init__(self, message: str, holder: WriterInfo) -> None:
        super().__init__(message)
        self.holder = holder


class WriterFenced(LeaseError):
    """This writer's token is older than the model's newest: another writer took over."""

    def __init__(self, message: str, newer: WriterInfo | None) -> None:
        super().__init__(message)
        self.newer = newer


def check_writer_id(writer_id: object) -> str:
    if not isinstance(writer_id, str) or not _WRITER_ID.fullmatch(writer_id):
        raise ValidationError(
            "writer_id",
            "1 to 200 letters, digits or . _ : @ / -",
            repr(writer_id),
        )
    return writer_id


def check_lease_ms(lease_ms: object) -> int:
    if isinstance(lease_ms, bool) or not isinstance(lease_ms, int) or lease_ms < 100:
        raise ValidationError(
            "lease_ms", "an integer number of milliseconds >= 100", repr(lease_ms)
        )
    return lease_ms


@dataclass(frozen=True)
class WriterInfo:
    """One lease file: who acquired which token, and until when it holds.

    ``state`` is ``"held"`` (renewed by its writer), ``"released"`` (stopped
    cleanly) or ``"lost"`` (an acquisition that lost a race; never held).
    Times are seconds since the epoch, by the writer's clock.
    """

    token: int
    writer_id: str
    host: str
    pid: int
    acquired_at: float
    renewed_at: float
    expires_at: float
    lease_ms: int
    state: str = "held"
    name: str = ""

    def live(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.state == "held" and self.expires_at > now

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "format": LEASE_FORMAT,
                "token": self.token,
                "writer_id": self.writer_id,
                "host": self.host,
                "pid": self.pid,
                "acquired_at": self.acquired_at,
                "renewed_at": self.renewed_at,
                "expires_at": self.expires_at,
                "lease_ms": self.lease_ms,
                "state": self.state,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return {**orjson.loads(self.to_json()), "live": self.live()}

    @classmethod
    def from_raw(cls, raw: object, name: str) -> WriterInfo:
        try:
            assert isinstance(raw, dict)
            info = cls(
                token=int(raw["token"]),
                writer_id=str(raw["writer_id"]),
                host=str(raw["host"]),
                pid=int(raw["pid"]),
                acquired_at=float(raw["acquired_at"]),
                renewed_at=float(raw["renewed_at"]),
                expires_at=float(raw["expires_at"]),
                lease_ms=int(raw["lease_ms"]),
                state=str(raw["state"]),
                name=name,
            )
        except (AssertionError, KeyError, TypeError, ValueError):
            raise StoreError(
                f"lease file writer/{name} is not what the store writes (got {str(raw)[:200]}); "
                "restore or delete it"
            ) from None
        if info.state not in {"held", "released", "lost"} or not name.startswith(
            f"{info.token:012d}-"
        ):
            raise StoreError(f"lease file writer/{name} is damaged (token or state); delete it")
        return info

    def describe(self, now: float | None = None) -> str:
        """``'trainer-1' on host h pid 12 (token 7), renewed 2.0 s ago, expires in 28.0 s``."""
        now = time.time() if now is None else now
        left = self.expires_at - now
        when = f"expires in {left:.1f} s" if left > 0 else f"expired {-left:.1f} s ago"
        return (
            f"{self.writer_id!r} on host {self.host} pid {self.pid} (token {self.token}), "
            f"renewed {max(0.0, now - self.renewed_at):.1f} s ago, lease {when}"
        )


class ClaimStore(Protocol):
    """What a :class:`Lease` needs of the store it was taken on (a
    :class:`~streamlearn.store.ModelStore`): the model's name, a claim file
    written again on renewal, and the fencing check. Declared here so the lease
    depends on this shape, not on the store's module (which builds on this one)."""

    @property
    def model(self) -> str: ...

    @property
    def _dir(self) -> str: ...

    def _fence(self, lease: Lease) -> None: ...

    def _write_claim(self, info: WriterInfo) -> None: ...


class Lease:
    """A held writer lease on one model (from :meth:`ModelStore.acquire_writer`).

    Pass it to :meth:`ModelStore.commit` (``lease=``); call :meth:`renew`
    more often than ``lease_ms`` (or :meth:`keep_alive` for a background
    thread) and :meth:`release` on a clean stop. Use as a context manager to
    release on exit.
    """

    def __init__(self, store: ClaimStore, info: WriterInfo) -> None:
        self.store = store
        self.info = info
        self.released = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: LeaseError | None = None
        self._write_lock = threading.Lock()
        self.quiet = False  # log acquire/release at DEBUG (``ModelStore.unlock``)

    @property
    def token(self) -> int:
        return self.info.token

    @property
    def writer_id(self) -> str:
        return self.info.writer_id

    @property
    def expires_at(self) -> float:
        return self.info.expires_at

    def __repr__(self) -> str:
        return (
            f"Lease(model={self.store.model!r}, writer_id={self.writer_id!r}, "
            f"token={self.token}, released={self.released})"
        )

    def check(self) -> None:
        """Raise :class:`WriterFenced` if another writer took over (or a renewal found so)."""
        if self._error is not None:
            raise self._error
        if self.released:
            raise LeaseError(
                f"model {self.store.model!r}: the lease of writer {self.writer_id!r} "
                f"(token {self.token}) was released; acquire a new one"
            )
        self.store._fence(self)

    def renew(self) -> None:
        """Extend the lease by ``lease_ms`` from now; :class:`WriterFenced` if taken over."""
        self.check()
        now = time.time()
        with self._write_lock:
            info = replace(self.info, renewed_at=now, expires_at=now + self.info.lease_ms / 1000)
            self.store._write_claim(info)
            self.info = info

    def keep_alive(self, every_s: float | None = None) -> None:
        """Renew from a daemon thread every ``every_s`` (default a third of the lease).

        If a renewal finds the writer fenced, the thread stops and the next
        :meth:`check`, :meth:`renew` or commit raises :class:`WriterFenced`.
        Other failures (the store briefly away) are logged and retried.
        """
        if self._thread is not None:
            return
        period = every_s if every_s is not None else self.info.lease_ms / 3000

        def loop() -> None:
            while not self._stop.wait(period):
                try:
                    self.renew()
                except LeaseError as exc:
                    self._error = exc
                    logger.warning("%s", exc)
                    return
                except (OSError, StoreError) as exc:
                    logger.warning(
                        "model %r: could not renew the writer lease (%s); retrying",
                        self.store.model, exc,
                    )

        self._thread = threading.Thread(
            target=loop, name=f"lease-{self.store.model}", daemon=True
        )
        self._thread.start()

    def release(self) -> None:
        """Give the lease up (another writer may acquire at once); a no-op if fenced."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        if self.released:
            return
        self.released = True
        try:
            self.store._fence(self)
        except WriterFenced:
            return
        now = time.time()
        with self._write_lock:
            self.info = replace(self.info, state="released", renewed_at=now, expires_at=now)
            self.store._write_claim(self.info)
        logger.log(
            logging.DEBUG if self.quiet else logging.INFO,
            "model %r: writer %r released its lease (token %d)",
            self.store.model, self.writer_id, self.token,
        )

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_token(name: str) -> int | None:
    m = _CLAIM.fullmatch(name)
    return int(m.group(1)) if m else None


def new_claim(token: int, writer_id: str, lease_ms: int) -> WriterInfo:
    """A held lease file for ``token`` written by this process."""
    now = time.time()
    return WriterInfo(
        token=token,
        writer_id=writer_id,
        host=socket.gethostname(),
        pid=os.getpid(),
        acquired_at=now,
        renewed_at=now,
        expires_at=now + lease_ms / 1000,
        lease_ms=lease_ms,
        name=f"{token:012d}-{uuid.uuid4().hex[:12]}.json",
    )


def backoff(attempt: int) -> None:
    """A random pause that breaks the symmetry of two acquisitions that both lost."""
    time.sleep(random.uniform(0.005, 0.02) * min(2**attempt, 32))

