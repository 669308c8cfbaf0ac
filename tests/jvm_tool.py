"""Run the JVM encoder's command-line tool (``io.streamlearn.flink.EncodeTool``) from tests.

The helper jar is (re)built like ``make jars`` does when it is missing or older
than a source under ``jvm/src``; each call is one JVM start, so tests batch
many messages into one call.
"""

from __future__ import annotations

import base64
import shutil
import struct
import subprocess
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import orjson

from connectors.paths import HELPER_JAR, build_helper_jar, jar_dir, project_root

TOOL = "io.streamlearn.flink.EncodeTool"


def helper_jar() -> Path:
    """The helper jar, built if missing or older than the Java sources."""
    jar = jar_dir("flink") / HELPER_JAR
    sources = list((project_root() / "jvm" / "src").rglob("*.java"))
    newest = max(p.stat().st_mtime for p in sources)
    stale = not jar.exists() or jar.stat().st_mtime < newest
    if not stale:
        with zipfile.ZipFile(jar) as z:
            stale = "io/streamlearn/flink/EncodeTool.class" not in z.namelist()
    if stale:
        build_helper_jar()
    return jar


def classpath() -> str:
    from connectors.paths import pyflink_home

    return f"{pyflink_home() / 'lib' / '*'}:{helper_jar()}"


def java() -> str:
    path = shutil.which("java")
    if path is None:
        raise RuntimeError("`java` (a JDK 17) is needed to run the JVM encoder tests")
    return path


def frame(messages: Sequence[bytes]) -> bytes:
    """Messages as the tool reads them: each a big-endian u32 length, then the bytes."""
    return b"".join(struct.pack(">I", len(m)) + m for m in messages)


def unframe(data: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        (n,) = struct.unpack_from(">I", data, at)
        out.append(data[at + 4 : at + 4 + n])
        at += 4 + n
    return out


def run(args: Sequence[str], stdin: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(
        [java(), "-cp", classpath(), TOOL, *args], input=stdin, capture_output=True, check=True
    )


def encode(
    messages: Sequence[bytes],
    task: str,
    bits: int,
    dense: Sequence[str] = (),
    max_features: int = 10_000,
    each: bool = True,
    dlq: tuple[str, int, int, int] | None = None,
    paths: dict | None = None,
    cache_size: int = 1 << 20,
    crosses: Sequence[Sequence[str]] = (),
) -> tuple[list[bytes], list[dict]]:
    """Encode ``messages`` in one JVM: the batch bytes (one per message with ``each``,
    else one for all) and the rejections (dicts with ``message``, ``field``,
    ``reason``, ``index``, ``raw`` as bytes and, with ``dlq``, the record bytes).
    ``paths`` (a dict) receives how many messages the fast scanner read wholly
    (``scanned``), how many envelope items it left to the complete path
    (``items_by_tree``) and how many messages it left wholly (``by_tree``)."""
    paths = {} if paths is None else paths
    with tempfile.TemporaryDirectory() as tmp:
        out, rej = Path(tmp, "out.bin"), Path(tmp, "rejections.jsonl")
        args = [
            "--task", task, "--bits", str(bits), "--dense", ",".join(dense),
            "--crosses", ",".join(f"{a}:{b}" for a, b in crosses),
            "--max-features", str(max_features), "--cache-size", str(cache_size), "--in", "-",
            "--out", str(out), "--rejections", str(rej),
        ]
        if each:
            args.append("--each")
        if dlq is not None:
            args += ["--dlq", ",".join(map(str, dlq))]
        done = run(args, frame(messages))
        paths.update(orjson.loads(done.stderr.splitlines()[-1]))
        data = out.read_bytes()
        batches = unframe(data) if each else [data]
        rejections = []
        for line in rej.read_bytes().splitlines():
            r = orjson.loads(line)
            r["raw"] = base64.b64decode(r["raw"])
            if "dlq" in r:
                r["dlq"] = base64.b64decode(r["dlq"])
            rejections.append(r)
    return batches, rejections


def dead_letters(rows: Sequence[tuple]) -> list[bytes]:
    """``io.streamlearn.flink.DeadLetter.record`` for each row of its arguments: (stage,
    topic, partition, offset, index or None, code or None, field, reason, raw bytes, at_ms)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "records.bin")
        framed = frame([
            orjson.dumps([*row[:8], base64.b64encode(row[8]).decode(), row[9]]) for row in rows
        ])
        run(["--dead-letters", "--in", "-", "--out", str(out)], framed)
        return unframe(out.read_bytes())


def hashes(
    pairs: Sequence[tuple[str, str | None]], bits: int
) -> list[tuple[int, int, int, int, str]]:
    """For each (name, value or None): name hash, value hash, slot, sign and the hex of
    the 64-byte BLAKE2b of the name (person "sl.name"), as the JVM computes them."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "hashes.txt")
        run(["--hash", "--bits", str(bits), "--in", "-", "--out", str(out)],
            frame([orjson.dumps(list(p)) for p in pairs]))
        rows = []
        for line in out.read_text("utf-8").splitlines():
            a, b, c, d, e = line.split(" ")
            rows.append((int(a), int(b), int(c), int(d), e))
    return rows
