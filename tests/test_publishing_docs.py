"""The examples of docs/publishing.md run as written, against the real broker."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parent.parent / "docs" / "publishing.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_page_has_its_examples():
    assert len(BLOCKS) == 6


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(kafka_broker, index, capsys, monkeypatch):
    from streamlearn.publish import Publisher

    # the broker of the tests, and topics of this test only; an example that
    # relies on the defaults gets them pointed there too
    topic = f"ev-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(Publisher.__init__, "__defaults__", (kafka_broker.bootstrap, topic))
    code = BLOCKS[index].replace("127.0.0.1:9092", kafka_broker.bootstrap)
    code = code.replace('"events', f'"{topic}').replace(
        '"raw"', f'"raw-{uuid.uuid4().hex[:8]}"'
    )
    exec(compile(code, f"{DOC.name} example {index + 1}", "exec"), {"__name__": "__doc__"})
    out = capsys.readouterr().out
    if "Publisher(create_topic=True)" in BLOCKS[index]:
        assert out.strip() == f"{topic} 1 True"
    if "1048576" in BLOCKS[index]:
        assert out.strip() == "1048576"
    if "MessageSizeTooLargeError" in BLOCKS[index]:
        assert out.strip() == "{'MessageSizeTooLargeError': 1}"
