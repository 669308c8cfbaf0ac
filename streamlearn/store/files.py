"""The few filesystem operations the store's commit protocol is built from.

Two implementations behind one small surface:

- :class:`LocalFiles` talks to the OS directly (it is faster than going
  through pyarrow for tiny files and it is the only way to get the atomic
  primitives): ``os.replace`` for atomic overwrite, ``os.link`` of a fully
  written temporary file for atomic *exclusive* create, ``fcntl.flock`` for the
  short critical sections.
- :class:`ArrowFiles` works over any :class:`pyarrow.fs.FileSystem` (S3, HDFS,
  GCS). Every object is written in one upload, which object stores make visible
  all at once, so readers never see part of a file; but pyarrow exposes no
  conditional write, so :meth:`ArrowFiles.create_exclusive` is a check, a
  write and a read-back, which detects most races but not all of them. See
  ``docs/store.md`` for what that means for several writers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.fs as pafs

__all__ = ["Files", "LocalFiles", "ArrowFiles", "files_for"]


class Files:
    """Interface: paths are '/'-joined strings relative to nothing (absolute)."""

    #: True when :meth:`create_exclusive` and :meth:`locked` are truly atomic.
    atomic: bool = False

    def read(self, path: str) -> bytes:
        """The whole file; FileNotFoundError when absent."""
        raise NotImplementedError

    def read_buffer(self, path: str) -> pa.Buffer:
        """The whole file as a pyarrow buffer (memory-mapped when local)."""
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def write_atomic(self, path: str, data: bytes) -> None:
        """Replace ``path`` with ``data``; readers see the old or the new file."""
        raise NotImplementedError

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create ``path`` holding ``data`` unless it exists; True if we created it."""
        raise NotImplementedError

    def open_output(self, path: str) -> pa.NativeFile:
        """A stream for a new file nobody reads until a commit record names it."""
        raise NotImplementedError

    def delete(self, path: str) -> bool:
        """Delete a file; False if it was already gone."""
        raise NotImplementedError

    def list_names(self, directory: str) -> list[str]:
        """Base names of the files in ``directory`` (empty if it does not exist)."""
        raise NotImplementedError

    def list_dirs(self, directory: str) -> list[str]:
        """Base names of the sub-directories of ``directory``."""
        raise NotImplementedError

    def makedirs(self, directory: str) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def locked(self, path: str) -> Iterator[None]:
        """A critical section among the processes sharing ``path`` (no-op if unsupported)."""
        yield


class LocalFiles(Files):
    """Local filesystem through ``os``: true atomic create, rename and locks."""

    atomic = True

    def __init__(self) -> None:
        self._made: set[str] = set()

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def read_buffer(self, path: str) -> pa.Buffer:
        # A memory map stays valid after the file is unlinked (POSIX), so a
        # version pruned while it is being read is still read whole.
        with pa.memory_map(path, "r") as mm:
            return mm.read_buffer()

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    @staticmethod
    def _tmp(path: str) -> str:
        # Same directory as the target (so link/rename stay on one filesystem);
        # the leading dot keeps it out of the store's listings.
        head, tail = os.path.split(path)
        return os.path.join(head, f".tmp.{tail}.{uuid.uuid4().hex}")

    def write_atomic(self, path: str, data: bytes) -> None:
        tmp = self._tmp(path)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        tmp = self._tmp(path)
        with open(tmp, "wb") as f:
            f.write(data)
        try:
            os.link(tmp, path)  # atomic, fails if path exists, and the content is complete
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    def open_output(self, path: str) -> pa.NativeFile:
        return pa.OSFile(path, "wb")

    def delete(self, path: str) -> bool:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True

    def list_names(self, directory: str) -> list[str]:
        try:
            with os.scandir(directory) as it:
                return [e.name for e in it if e.is_file()]
        except FileNotFoundError:
            return []

    def list_dirs(self, directory: str) -> list[str]:
        try:
            with os.scandir(directory) as it:
                return [e.name for e in it if e.is_dir()]
        except FileNotFoundError:
            return []

    def makedirs(self, directory: str) -> None:
        if directory not in self._made:
            os.makedirs(directory, exist_ok=True)
            self._made.add(directory)

    @contextlib.contextmanager
    def locked(self, path: str) -> Iterator[None]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if the process dies
            yield
        finally:
            os.close(fd)


class ArrowFiles(Files):
    """Any pyarrow filesystem; writes are single uploads, no conditional writes."""

    atomic = False

    def __init__(self, fs: pafs.FileSystem) -> None:
        self.fs = fs

    def read(self, path: str) -> bytes:
        return self.read_buffer(path).to_pybytes()

    def read_buffer(self, path: str) -> pa.Buffer:
        # One stream read of the whole object: a single GET on S3, so a file
        # deleted meanwhile gives FileNotFoundError, never a partial read.
        with self.fs.open_input_stream(path) as f:
            return f.read_buffer()

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.File

    def write_atomic(self, path: str, data: bytes) -> None:
        with self.fs.open_output_stream(path) as f:
            f.write(data)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        if self.exists(path):
            return False
        self.write_atomic(path, data)
        try:
            return self.read(path) == data  # a rival that wrote after us wins
        except FileNotFoundError:
            return False

    def open_output(self, path: str) -> pa.NativeFile:
        return self.fs.open_output_stream(path)

    def delete(self, path: str) -> bool:
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if getattr(exc, "errno", None) == errno.ENOENT:
                return False
            raise
        return True

    def _infos(self, directory: str) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(directory, allow_not_found=True, recursive=False)
        return self.fs.get_file_info(selector)

    def list_names(self, directory: str) -> list[str]:
        return [i.base_name for i in self._infos(directory) if i.type == pafs.FileType.File]

    def list_dirs(self, directory: str) -> list[str]:
        return [i.base_name for i in self._infos(directory) if i.type == pafs.FileType.Directory]

    def makedirs(self, directory: str) -> None:
        self.fs.create_dir(directory, recursive=True)


def files_for(fs: pafs.FileSystem) -> Files:
    """The fastest correct implementation for ``fs``."""
    if isinstance(fs, pafs.LocalFileSystem):
        return LocalFiles()
    return ArrowFiles(fs)
