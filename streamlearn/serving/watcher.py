"""Hot swap: follow the version to serve and switch to it atomically.

A :class:`ModelWatcher` polls its :class:`~streamlearn.serving.model.ModelSource`
from a background thread (every 20 ms by default), loads a new version there,
off the request path, and swaps it in with one attribute assignment. A
request reads :attr:`ModelWatcher.served` (or :attr:`ModelWatcher.current`)
once and uses that predictor for all of its events, so it is answered
entirely by one version. Whether a predictor has the optional fast paths
(:class:`~streamlearn.serving.model.FastPredictor`) is found out once, when
its version is loaded (:class:`Served`), so requests pay no check. Pins and
rollbacks are honoured because the watcher follows whatever the source says to
serve, up or down.

**Delta versions: double buffering.** When the source can say what changed
between two versions (``source.advance``, see
:class:`~streamlearn.serving.model.Step`) and the predictor can follow
(a :class:`~streamlearn.serving.model.Follower` whose ``can_follow`` is
true), the watcher keeps two predictors of the model: the current
one, which requests use, and a spare no request holds. A new version that is
a delta on the current one is written into the spare (``apply``, time
proportional to the slots changed, never to the model), the spare is swapped
in with the same one assignment, and the old current becomes the spare. Once
no request holds it any more (its reference count drops to the watcher's own:
a request holds the predictor it read for as long as it uses it), the same
changes are written into it, so that it is ready for the next version. A
request is answered wholly by one version because a predictor is written
only while no request holds it. Anything else (a snapshot, a rollback, a pin
going backwards, a failure while writing, a spare still held after
``spare_wait_s``) loads the version whole, as before; a source error (a broken
delta chain) is logged in one line and the current version keeps serving.
"""

from __future__ import annotations

import enum
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from streamlearn.errors import ConfigError, VersionNotFound
from streamlearn.serving.model import FastPredictor, Follower, ModelSource, Predictor, Step

__all__ = ["ModelWatcher", "Served", "not_serving_message"]


class _Wait(enum.Enum):
    NOT_YET = "not yet"  # _follow: the spare is still held by a request; try at the next poll


_NOT_YET = _Wait.NOT_YET

log = logging.getLogger(__name__)

_MODELS_EVERY_S = 2.0  # while nothing is served: how often to list the source's models


def not_serving_message(model: str, models: list[str] | None) -> str:
    """Why nothing is served yet, naming the model and, when ``models`` (the
    models the store holds) is known and lacks it, those the store does hold.

    >>> not_serving_message("typo", ["ctr", "default"])
    "model 'typo' is not in the store, which holds 'ctr', 'default'; pass --model with one \
of those, or commit a version of 'typo'"
    >>> not_serving_message("ctr", [])
    "model 'ctr' is not in the store, which holds no model yet; commit a version of 'ctr'"
    >>> not_serving_message("ctr", ["ctr"])
    "no version of model 'ctr' loaded yet; retry shortly"
    """
    if models is None or model in models:
        return f"no version of model {model!r} loaded yet; retry shortly"
    if not models:
        return (
            f"model {model!r} is not in the store, which holds no model yet;"
            f" commit a version of {model!r}"
        )
    held = ", ".join(repr(m) for m in models[:20]) + (", ..." if len(models) > 20 else "")
    return (
        f"model {model!r} is not in the store, which holds {held}; pass --model with one of"
        f" those, or commit a version of {model!r}"
    )


@dataclass(frozen=True, slots=True, eq=False)
class Served:
    """A loaded version as the server uses it: its ``predictor``, and the same
    object again as each optional protocol it has, else ``None``.

    Built once per loaded version (:meth:`of`: a check of a runtime protocol
    costs microseconds), so that a request finds its fast paths in one
    attribute read and the type checker sees every call to them.
    """

    predictor: Predictor
    #: the predictor when it has the fast paths of :class:`FastPredictor`
    fast: FastPredictor | None
    #: the predictor when it can follow delta versions (:class:`Follower`)
    follower: Follower | None

    @classmethod
    def of(cls, predictor: Predictor) -> Served:
        """``predictor`` with the optional protocols it has found out."""
        return cls(
            predictor,
            predictor if isinstance(predictor, FastPredictor) else None,
            predictor if isinstance(predictor, Follower) else None,
        )


class ModelWatcher:
    """Keep the newest servable version loaded and swap to it atomically.

    Parameters
    ----------
    source
        Tells which version to serve and loads versions.
    interval_s
        Seconds between two polls of ``source.serving_version()``.
    cache_size
        How many loaded versions to keep for requests that ask a specific
        ``version`` (the current one is always kept).
    on_swap
        Called as ``on_swap(old_version, new_version)`` after each swap.
    spare_wait_s
        How long a delta waits for the spare predictor to be released by the
        requests still holding it before the version is loaded whole instead.
    """

    def __init__(
        self,
        source: ModelSource,
        *,
        interval_s: float = 0.02,
        cache_size: int = 8,
        on_swap: Callable[[int | None, int], None] | None = None,
        spare_wait_s: float = 1.0,
    ) -> None:
        if not 0 < interval_s <= 0.2:
            raise ConfigError("interval_s", "a number of seconds in (0, 0.2]", repr(interval_s))
        if cache_size < 1:
            raise ConfigError("cache_size", "an integer >= 1", repr(cache_size))
        self.source = source
        self.interval_s = interval_s
        self.cache_size = cache_size
        self.on_swap = on_swap
        self.swaps = 0
        self.last_error: str | None = None
        #: while no version is served: the models the source holds (when it can
        #: list them), refreshed every couple of seconds by the polling thread
        self.models_available: list[str] | None = None
        self._models_listed_at = -_MODELS_EVERY_S
        #: the version serving now with its fast paths (``None`` until a first
        #: version is loaded); replaced in one assignment at each swap, read
        #: once by a request (a plain attribute: no call on the request path)
        self.served: Served | None = None
        self._cache: OrderedDict[int, Served] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll_lock = threading.Lock()
        self.spare_wait_s = spare_wait_s
        #: versions reached by applying a delta / loaded whole, and the seconds the
        #: last delta took to apply (to the idle buffer, before its swap)
        self.applied = 0
        self.loaded = 0
        self.last_apply_s: float | None = None
        # the double buffer: a predictor no request holds (held only here), and the
        # steps it still owes to reach the current version
        self._spare: Follower | None = None
        self._owed: list[Step] = []
        self._spare_busy_since: float | None = None
        self._no_spare_for: int | None = None  # the version whose copy failed
        self._spare_error: str | None = None

    @property
    def current(self) -> Predictor | None:
        """The predictor serving now; ``None`` until a first version is loaded."""
        served = self.served
        return None if served is None else served.predictor

    def poll_once(self) -> bool:
        """Check the source once; load (or apply a delta) and swap if it names
        another version.

        Returns whether a swap happened. Errors of the source are logged and
        kept in :attr:`last_error`; the current version keeps serving.
        """
        with self._poll_lock:
            return self._poll()

    def _poll(self) -> bool:
        wanted: int | None = None
        retired: Follower | None = None  # the current predictor, once a delta replaces it
        try:
            wanted = self.source.serving_version()
            current = self.served
            if wanted is None and current is None:
                self._list_models()
            if wanted is None or (current is not None and current.predictor.version == wanted):
                self.last_error = None
                self._tend_spare()
                return False
            served = self._cached(wanted)
            if served is None and current is not None:
                followed = self._follow(current, wanted)
                if followed is _NOT_YET:
                    return False
                if followed is not None:
                    served, retired = Served.of(followed), current.follower
                del followed
            if served is None:
                served = Served.of(self.source.load(wanted))
                self.loaded += 1
            self._remember(served)
        except Exception as exc:  # keep serving the old version whatever the store does
            message = f"{type(exc).__name__}: {exc}"
            if message != self.last_error:
                serving = self.served
                log.warning(
                    "model %r: version %s cannot be served, still serving version %s: %s",
                    self.source.name, wanted,
                    serving.predictor.version if serving is not None else None, message,
                )
            self.last_error = message
            return False
        self.last_error = None
        old = current.predictor.version if current is not None else None
        new = served.predictor.version
        self.served = served  # the swap: one assignment, atomic for readers
        self.swaps += 1
        followed_delta = retired is not None
        if retired is not None:
            # the old current becomes the spare: no request can read it from here on
            self._forget(retired)
            self._spare = retired
            self._spare_busy_since = None
        elif self._spare is not None:
            self._spare, self._owed = None, []  # not on the new version's chain
        # no reference to the spare may outlive this call (see _spare_idle)
        del current, served, retired
        # a delta swap can come ten times a second: only in the debug log
        log.log(logging.DEBUG if followed_delta else logging.INFO, "serving version %d (was %s)%s",
                new, old, " by a delta" if followed_delta else "")
        if self.on_swap is not None:
            self.on_swap(old, new)
        return True

    # -- double buffering ---------------------------------------------------------

    def _spare_idle(self) -> bool:
        """Whether no request holds the spare: its only reference is ours
        (``self._spare``, plus the one ``getrefcount`` takes)."""
        return sys.getrefcount(self._spare) <= 2

    def _follow(self, current: Served, wanted: int) -> Follower | _Wait | None:
        """The spare brought to ``wanted`` by the changes since the current
        version; ``None`` to load ``wanted`` whole; ``_NOT_YET`` while a
        request still holds the spare."""
        advance = getattr(self.source, "advance", None)  # optional: see Step
        follower = current.follower
        if advance is None or follower is None or not follower.can_follow:
            return None
        step: Step = advance(follower.version, wanted)
        if step.reload is not None:
            log.info("model %r: %s", self.source.name, step.reload)
            return None
        if self._spare is None:
            self._make_spare(follower)
        elif not self._settle_spare():
            return _NOT_YET if self._spare is not None else None
        spare = self._spare
        if spare is None:  # the current version could not be copied: load it whole
            return None
        started = time.perf_counter()
        try:
            spare.apply(step)
        except Exception as exc:
            log.warning(
                "model %r: could not apply version %d on %d (%s: %s); loading it whole",
                self.source.name, step.version, follower.version, type(exc).__name__, exc,
            )
            self._spare, self._owed = None, []
            return None
        self.last_apply_s = time.perf_counter() - started
        self.applied += 1
        self._spare, self._owed = None, [step]
        return spare

    def _settle_spare(self) -> bool:
        """Bring the spare to the current version once no request holds it:
        ``True`` when it is there; ``False`` while it is held (it is dropped,
        leaving ``self._spare`` None, after ``spare_wait_s``) or when replaying
        failed (dropped too)."""
        if self._spare is None:
            return False
        if not self._spare_idle():
            now = time.monotonic()
            if self._spare_busy_since is None:
                self._spare_busy_since = now
            elif now - self._spare_busy_since > self.spare_wait_s:
                log.warning(
                    "model %r: the spare predictor is still held after %.1f s; dropping it",
                    self.source.name, self.spare_wait_s,
                )
                self._spare, self._owed = None, []
            return False
        self._spare_busy_since = None
        try:
            while self._owed:
                self._spare.apply(self._owed[0])
                self._owed.pop(0)
        except Exception as exc:
            log.warning("model %r: could not replay a delta on the spare predictor (%s: %s);"
                        " dropping it", self.source.name, type(exc).__name__, exc)
            self._spare, self._owed = None, []
            return False
        return True

    def _tend_spare(self) -> None:
        """Between versions: replay what the spare owes once it is released, or
        make a spare (a copy of the current predictor) when there is none."""
        if self._spare is not None:
            if self._owed:
                self._settle_spare()
            return
        current = self.served
        follower = None if current is None else current.follower
        if (follower is not None and follower.can_follow
                and getattr(self.source, "advance", None) is not None):
            self._make_spare(follower)

    def _make_spare(self, current: Follower) -> bool:
        """Copy ``current`` into the spare (once per version if copying fails)."""
        if self._no_spare_for == current.version:
            return False
        try:
            self._spare, self._owed = current.clone(), []
        except Exception as exc:  # e.g. no memory for a second copy: load versions whole
            self._no_spare_for = current.version  # tried again after the next whole load
            message = f"{type(exc).__name__}: {exc}"
            if message != self._spare_error:  # once, not at every version
                log.warning(
                    "model %r: could not copy version %d for applying deltas (%s); the next "
                    "versions are loaded whole", self.source.name, current.version, message,
                )
            self._spare_error = message
            return False
        self._spare_error = None
        return True

    def _forget(self, predictor: Predictor) -> None:
        """Drop ``predictor`` from the cache of loaded versions (it is about to change)."""
        with self._cache_lock:
            served = self._cache.get(predictor.version)
            if served is not None and served.predictor is predictor:
                del self._cache[predictor.version]

    def _list_models(self) -> None:
        """Refresh :attr:`models_available` (at most every couple of seconds)."""
        now = time.monotonic()
        lister = getattr(self.source, "models", None)
        if lister is None or now - self._models_listed_at < _MODELS_EVERY_S:
            return
        self._models_listed_at = now
        self.models_available = list(lister())

    def peek(self, version: int) -> Served | None:
        """``version`` if it is loaded already, else ``None``; never blocks."""
        current = self.served
        if current is not None and current.predictor.version == version:
            return current
        return self._cached(version)

    def get(self, version: int) -> Served:
        """A specific ``version``, loading it if needed.

        Raises :class:`~streamlearn.errors.VersionNotFound` when the source has
        no such version. Blocking: call it from a worker thread in async code.
        """
        current = self.served
        if current is not None and current.predictor.version == version:
            return current
        served = self._cached(version)
        if served is None:
            predictor = self.source.load(version)
            if predictor.version != version:
                raise VersionNotFound(f"version {version} of model {self.source.name!r}")
            served = Served.of(predictor)
            self._remember(served)
        return served

    def start(self) -> None:
        """Poll once now, then keep polling from a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self.poll_once()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the polling thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until a version is loaded or ``timeout_s`` passes; returns readiness."""
        deadline = time.monotonic() + timeout_s
        while self.served is None and time.monotonic() < deadline:
            time.sleep(min(self.interval_s, 0.01))
        return self.served is not None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll_once()

    def _cached(self, version: int) -> Served | None:
        with self._cache_lock:
            served = self._cache.get(version)
            if served is not None:
                self._cache.move_to_end(version)
            return served

    def _remember(self, served: Served) -> None:
        version = served.predictor.version
        with self._cache_lock:
            self._cache[version] = served
            self._cache.move_to_end(version)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
