"""The Python environment a cluster job takes with it: one zip, shipped with ``-pyarch``.

A task manager on another host has neither this machine's venv nor the project
tree. :func:`python_env_archive` packs what the job's Python workers run into a
zip that ``flink run -pyarch ARCHIVE#pyenv`` ships with the job; every task
manager extracts it beside the job and runs ``pyenv/venv/bin/python``
(``-pyexec``, :data:`WORKER_PYTHON`):

- the interpreter itself: this Python's binary, its ``libpython`` and its
  standard library (without ``test/``, ``idlelib``, ``tkinter`` and the static
  library), laid out as a relocatable prefix, so the workers need no Python
  installed (only a compatible ``glibc``: the same Linux build as the submitter);
- ``bin/python``, a two-line launcher that puts the archive's ``lib/`` first on
  ``LD_LIBRARY_PATH``, so the binary and PyFlink's thread mode (pemja, which
  loads the ``libpython`` the launcher's Python links) take the shipped library;
- ``_streamlearn_pyenv_pin``, run at interpreter start (a ``.pth`` line): in thread
  mode a task manager's JVM keeps one embedded interpreter for its whole life,
  while Flink extracts the archive anew for every task attempt and deletes the
  old extraction when the attempt ends (a failover), leaving the interpreter's
  ``sys.path`` on a deleted directory (``No module named ...`` on the first lazy
  import after a restart). The hook links the extraction, file for file, into a
  directory named by the archive's digest beside it (``streamlearn-pyenv-<digest>``,
  hard links: no copy) and points ``sys.path`` there, so imports keep working
  across restarts;
- ``site-packages``: every distribution streamlearn depends on at run time (the
  closure of its ``Requires-Dist``, without extras), file for file from their
  ``RECORD`` (PyFlink without its jars: the task managers have their own), and
  the project's packages (``streamlearn``, ``connectors``, ``flink_jobs``) with
  their compiled extensions, copied from the tree.

The archive is cached under ``<state>/pyenv/``, named by a digest of what goes
in (the interpreter's version, every distribution's name and version, and the
content of the project's packages): it is rebuilt only when one of those
changes, and only the newest archive is kept.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import logging
import os
import re
import stat
import sys
import sysconfig
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

from connectors.paths import project_root, state_dir
from streamlearn.errors import ServiceError

__all__ = ["ARCHIVE_NAME", "WORKER_PYTHON", "python_env_archive", "runtime_distributions"]

log = logging.getLogger(__name__)

#: The directory the task managers extract the archive into (``-pyarch FILE#pyenv``).
ARCHIVE_NAME = "pyenv"
#: The workers' interpreter, relative to the job's working directory (``-pyexec``).
WORKER_PYTHON = f"{ARCHIVE_NAME}/venv/bin/python"

#: The project's own packages, copied from the tree (the venv holds them editable).
PROJECT_PACKAGES = ("streamlearn", "connectors", "flink_jobs")

#: Parts of the standard library no worker imports.
_STDLIB_SKIP = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip",
                "lib2to3", "__pycache__"}
#: Files of distributions a worker never reads: PyFlink's jars (the task managers run
#: their own Flink), compiled bytecode (rebuilt on import), C headers.
_SKIP_FILE = re.compile(
    r"(^|/)__pycache__/|^pyflink/(lib|opt|examples|plugins|licenses)/|\.pyc$|(^|/)include/"
)

_LAUNCHER = """#!/bin/sh
here=$(cd "$(dirname "$0")" && pwd)
LD_LIBRARY_PATH="$here/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/%s" "$@"
"""


#: Run at interpreter start by ``_streamlearn_pyenv_pin.pth`` (see the module's docstring).
_PIN = '''"""Keeps a shipped streamlearn environment importable for the interpreter's life.

Written by connectors.python_env. Flink extracts the archive under
``<io.tmp.dirs>/python-dist-<uuid>/python-archives/`` per task attempt and deletes
it when the attempt ends; this links the extraction into ``streamlearn-pyenv-%(digest)s``
beside it (once per host) and points ``sys.path`` and the packages imported so far there.
"""
import os
import sys

DIGEST = "%(digest)s"


def pin():
    old = sys.prefix
    parts = old.replace(os.sep, "/").split("/")
    if "python-archives" not in parts or not any(p.startswith("python-dist-") for p in parts):
        return
    dist = parts.index("python-archives") - 1
    root = os.sep.join(parts[:dist])
    relative = os.sep.join(parts[dist + 2:])
    stable_root = os.path.join(root, "streamlearn-pyenv-" + DIGEST)
    new = os.path.join(stable_root, relative)
    if not os.path.isdir(new):
        extracted = os.sep.join(parts[:dist + 2])
        staging = "%%s.%%d-%%d" %% (stable_root, os.getpid(), id(parts))
        for here, dirs, files in os.walk(extracted):
            target = os.path.join(staging, os.path.relpath(here, extracted))
            os.makedirs(target, exist_ok=True)
            for name in files:
                src, dst = os.path.join(here, name), os.path.join(target, name)
                try:
                    os.link(src, dst)
                except OSError:
                    import shutil

                    shutil.copy2(src, dst)
        try:
            os.rename(staging, stable_root)
        except OSError:  # another interpreter pinned it first
            import shutil

            shutil.rmtree(staging, ignore_errors=True)

    def moved(path):
        return new + path[len(old):] if isinstance(path, str) and path.startswith(old) else path

    sys.path[:] = [moved(p) for p in sys.path]
    for module in list(sys.modules.values()):
        search = getattr(module, "__path__", None)
        if isinstance(search, list):
            search[:] = [moved(p) for p in search]
    sys.path_importer_cache.clear()


try:
    pin()
except Exception as exc:  # never stop an interpreter from starting
    sys.stderr.write("streamlearn: the shipped environment was not pinned: %%r\\n" %% (exc,))
'''


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_distributions(root: str = "streamlearn") -> list[metadata.Distribution]:
    """``root`` and every distribution it needs at run time (its extras left out)."""
    from packaging.requirements import Requirement

    seen: dict[str, metadata.Distribution] = {}
    todo: list[tuple[str, tuple[str, ...]]] = [(root, ())]
    while todo:
        name, extras = todo.pop()
        if _key(name) in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise ServiceError(
                f"{name}, a run-time dependency of {root}, is not installed in this Python: "
                "run `make venv`"
            ) from None
        seen[_key(name)] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras or ("",)):
                continue
            todo.append((req.name, tuple(req.extras)))
    return [seen[k] for k in sorted(seen)]


def _project_files() -> Iterator[tuple[Path, str]]:
    """The project's package files (source, data, compiled extensions) → archive names."""
    root = project_root()
    for package in PROJECT_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and "__pycache__" not in rel and not rel.endswith(".pyc"):
                yield path, rel


def _dist_files(dists: list[metadata.Distribution]) -> Iterator[tuple[Path, str]]:
    """Files of the distributions under site-packages (the project's come from the tree)."""
    for dist in dists:
        if _key(dist.metadata["Name"]) == "streamlearn":
            continue
        for entry in dist.files or []:
            rel = entry.as_posix()
            if rel.startswith("..") or _SKIP_FILE.search(rel):
                continue
            path = Path(str(entry.locate()))
            if path.is_file():
                yield path, rel


def _interpreter() -> tuple[Path, Path, Path]:
    """This Python's base binary, its shared ``libpython`` and its standard library."""
    prefix = Path(sys.base_prefix)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    binary = prefix / "bin" / f"python{version}"
    libname = sysconfig.get_config_var("INSTSONAME") or f"libpython{version}.so.1.0"
    library = Path(sysconfig.get_config_var("LIBDIR") or prefix / "lib") / libname
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    if not binary.is_file() or not library.is_file() or not sysconfig.get_config_var(
        "Py_ENABLE_SHARED"
    ):
        raise ServiceError(
            f"this Python ({binary}) is not built with a shared libpython, which PyFlink's "
            "workers load: use a Python built with --enable-shared (pyenv: "
            "PYTHON_CONFIGURE_OPTS=--enable-shared)"
        )
    return binary, library, stdlib


def _stdlib_files(stdlib: Path) -> Iterator[tuple[Path, str]]:
    for path in sorted(stdlib.rglob("*")):
        rel = path.relative_to(stdlib)
        if rel.parts[0] in _STDLIB_SKIP or rel.parts[0].startswith("config-"):
            continue
        if "__pycache__" in rel.parts or not path.is_file():
            continue
        yield path, rel.as_posix()


def _digest(dists: list[metadata.Distribution], binary: Path) -> str:
    h = hashlib.sha256()
    h.update(f"{sys.version}|{binary}|{binary.stat().st_size}".encode())
    h.update(Path(__file__).read_bytes())
    for dist in dists:
        h.update(f"|{_key(dist.metadata['Name'])}=={dist.version}".encode())
    for path, rel in _project_files():
        h.update(rel.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def python_env_archive(directory: Path | None = None) -> Path:
    """The zip of this Python and what the job needs (built once per change, cached)."""
    dists = runtime_distributions()
    binary, library, stdlib = _interpreter()
    cache = directory or state_dir("pyenv")
    cache.mkdir(parents=True, exist_ok=True)
    digest = _digest(dists, binary)
    target = cache / f"streamlearn-pyenv-{digest}.zip"
    if target.is_file():
        return target
    started = time.monotonic()
    version = stdlib.name  # python3.11
    venv = "venv"
    fd, tmp = tempfile.mkstemp(prefix=".building-", suffix=".zip", dir=cache)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            def add(path: Path, name: str) -> None:
                info = zipfile.ZipInfo.from_file(path, name)
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(path, "rb") as src, zf.open(info, "w") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)

            def add_text(text: str, name: str, mode: int = 0o644) -> None:
                info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
                info.external_attr = (stat.S_IFREG | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, text)

            add(binary, f"{venv}/bin/{binary.name}")
            add_text(_LAUNCHER % binary.name, f"{venv}/bin/python", 0o755)
            add(library, f"{venv}/lib/{library.name}")
            for path, rel in _stdlib_files(stdlib):
                add(path, f"{venv}/lib/{version}/{rel}")
            site = f"{venv}/lib/{version}/site-packages"
            add_text(_PIN % {"digest": digest}, f"{site}/_streamlearn_pyenv_pin.py")
            add_text("import _streamlearn_pyenv_pin\n", f"{site}/_streamlearn_pyenv_pin.pth")
            written: set[str] = set()  # PyFlink's two distributions share a few files
            for path, rel in [*_dist_files(dists), *_project_files()]:
                if rel not in written:
                    written.add(rel)
                    add(path, f"{site}/{rel}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    for old in cache.glob("streamlearn-pyenv-*.zip"):  # bounded disk: one archive kept
        if old != target:
            old.unlink(missing_ok=True)
    log.info("packed the job's Python environment in %.1f s: %s (%.0f MB)",
             time.monotonic() - started, target, target.stat().st_size / 1e6)
    return target


if __name__ == "__main__":  # `python -m connectors.python_env`: build (or find) the archive
    print(python_env_archive())
