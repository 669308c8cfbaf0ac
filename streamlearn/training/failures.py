"""The training job's known failures, told in one line with the cause and what to do.

A job that fails in the JVM leaves a Java stack trace of a hundred lines or more,
with the cause somewhere near the end. :func:`diagnose` reads the job's output and
returns one line for the failures a user meets first (a topic that does not
exist, a broker that does not answer, a jar that is missing, a model that has
another writer), and the deepest ``Caused by`` for the rest.

>>> log = '''Traceback (most recent call last):
... py4j.protocol.Py4JJavaError: An error occurred while calling o12.execute.
... : org.apache.flink.runtime.client.JobExecutionException: Job execution failed.
... Caused by: java.lang.RuntimeException: Failed to get metadata for topics [nosuch].
... Caused by: org.apache.kafka.common.errors.UnknownTopicOrPartitionException: This server \
does not host this topic-partition.'''
>>> diagnose(log, topic="nosuch", bootstrap="127.0.0.1:9092")
"topic 'nosuch' does not exist on 127.0.0.1:9092: create it with `streamlearn topics \
create nosuch`, or name another with --topic"
>>> diagnose("Caused by: java.lang.ClassNotFoundException: io.streamlearn.flink.EncodeBundler",
...          topic="t", bootstrap="b:1")
'a class the job needs is missing (io.streamlearn.flink.EncodeBundler): the jars in \
jvm/lib/flink are incomplete; run `make jars`'
>>> diagnose("Caused by: java.lang.IllegalStateException: odd\\n\\tat x.y(Z.java:1)",
...          topic="t", bootstrap="b:1")
'the job failed: java.lang.IllegalStateException: odd'
"""

from __future__ import annotations

import re

__all__ = ["diagnose"]

_OWN = re.compile(r"^train: (.+)$", re.M)  # the job file's own one-line refusals
_WRITER = re.compile(r"(?:WriterBusy|WriterFenced): (.+)")
_CAUSED = re.compile(r"^Caused by: (\S+?)(?:: (.*))?$", re.M)
_CLASS = re.compile(r"(?:ClassNotFoundException|NoClassDefFoundError):? ([\w.$/]+)")
_TOPIC = re.compile(
    r"UnknownTopicOrPartitionException|Failed to get metadata for topics|"
    r"[Tt]opic[s]? .{0,80}(?:not present|does not exist|not found)"
)
_BROKER = re.compile(
    r"Timed out waiting for a node assignment|Timed out waiting to send the call|"
    r"Connection to node -?\d+ .{0,80}could not be established|"
    r"TimeoutException: Timed out waiting for .{0,40}metadata"
)


def diagnose(log: str, *, topic: str, bootstrap: str) -> str:
    """One line saying why the job failed and what to do, from the job's output ``log``."""
    own = _OWN.findall(log)
    if own:
        return own[-1].strip()
    writer = _WRITER.findall(log)
    if writer:
        return writer[-1].strip()
    if _TOPIC.search(log):
        return (
            f"topic {topic!r} does not exist on {bootstrap}: create it with "
            f"`streamlearn topics create {topic}`, or name another with --topic"
        )
    missing = _CLASS.search(log)
    if missing:
        return (
            f"a class the job needs is missing ({missing.group(1).replace('/', '.')}): the jars "
            "in jvm/lib/flink are incomplete; run `make jars`"
        )
    if _BROKER.search(log):
        return (
            f"Kafka at {bootstrap} did not answer the job: is the broker running "
            "(`streamlearn kafka start`) and is --bootstrap its address?"
        )
    causes = _CAUSED.findall(log)
    if causes:
        name, message = causes[-1]
        return f"the job failed: {name}" + (f": {message.strip()}" if message.strip() else "")
    lines = [line.strip() for line in log.strip().splitlines() if line.strip()]
    return f"the job failed: {lines[-1]}" if lines else "the job failed without a word"
