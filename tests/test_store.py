"""Model store on the local filesystem: payload forms, validation, index, recovery, retention."""

from __future__ import annotations

import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc as ipc
import pytest

import streamlearn.store as store_pkg
from streamlearn.errors import ConfigError, ValidationError, VersionNotFound
from streamlearn.store import Head, Lineage, ModelStore
from streamlearn.store.location import resolve


def stream_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


def file_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


class FakeState:
    """Stands for ModelState: something with to_bytes() giving Arrow IPC stream bytes."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def to_bytes(self) -> bytes:
        return stream_bytes(self.table)


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(str(tmp_path / "models"), model="m")


def test_exports_match_all() -> None:
    assert sorted(store_pkg.__all__) == sorted(
        n for n in dir(store_pkg) if not n.startswith("_") and n[0].isupper()
    )


def test_payload_forms_round_trip(store: ModelStore) -> None:
    table = pa.table(
        {"w": np.arange(5, dtype=np.float64), "i": np.arange(5, dtype=np.int32)}
    ).replace_schema_metadata({b"learner": b"logistic"})
    v_stream = store.commit(stream_bytes(table))
    v_file = store.commit(file_bytes(table))
    v_obj = store.commit(FakeState(table))
    v_batch = store.commit(table.to_batches()[0])
    v_opaque = store.commit(b"\x00not arrow at all\xff")
    for v in (v_stream, v_file, v_obj, v_batch):
        got = store.get(v)
        assert got.payload_kind == "arrow"
        assert got.table.schema.metadata[b"learner"] == b"logistic"  # payload's own metadata kept
        back = ipc.open_stream(got.to_bytes()).read_all()
        assert back.equals(table) and back.schema.metadata == table.schema.metadata
    opaque = store.get(v_opaque)
    assert opaque.payload_kind == "opaque" and opaque.to_bytes() == b"\x00not arrow at all\xff"
    with pytest.raises(ValidationError, match="field `state` of commit"):
        store.commit(12345)
    with pytest.raises(ValidationError, match="field `lineage`"):
        store.commit(table, {"events": 3})


def test_lineage_validation_names_the_field() -> None:
    with pytest.raises(ValidationError, match=r"offsets\['events'\]\[0\]"):
        Lineage(offsets={"events": {0: -5}})
    with pytest.raises(ValidationError, match=r"parents\[1\]"):
        Lineage(parents=(3, 0))
    with pytest.raises(ValidationError, match=r"metrics\['loss'\]"):
        Lineage(metrics={"loss": float("nan")})
    with pytest.raises(ValidationError, match="field `colour` of lineage"):
        Lineage.from_dict({"colour": "blue"})
    lin = Lineage(offsets={"t": {3: 7}}, parents=[2], learners=["a"], created_at=5)
    assert lin.parents == (2,) and lin.learners == ("a",) and lin.created_at == 5.0
    assert Lineage.from_json(lin.to_json()) == lin


def test_arguments_are_validated(store: ModelStore, tmp_path) -> None:
    with pytest.raises(ValidationError, match="field `model`"):
        ModelStore(str(tmp_path), model="../escape")
    with pytest.raises(ValidationError, match="field `version`"):
        store.get(0)
    with pytest.raises(ValidationError, match="field `version`"):
        store.get(True)
    with pytest.raises(ValidationError, match="field `keep_last`"):
        store.retain(keep_last=0)
    with pytest.raises(ConfigError, match="both or neither"):
        resolve("s3://bucket/p?access_key=x")
    with pytest.raises(ConfigError, match="allow_bucket_creation"):
        resolve("s3://bucket/p?allow_bucket_creation=maybe")


def test_s3_settings_fall_back_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9999")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    fs, root = resolve("s3://bucket/a/b/")
    options = fs.__reduce__()[1][0]
    assert root == "bucket/a/b"
    assert (options["endpoint_override"], options["scheme"], options["region"]) == (
        "127.0.0.1:9999",
        "http",
        "eu-west-3",
    )
    fs, _ = resolve("s3://bucket?region=us-east-2&endpoint_override=h:1&scheme=https")
    options = fs.__reduce__()[1][0]
    assert (options["endpoint_override"], options["scheme"], options["region"]) == (
        "h:1",
        "https",
        "us-east-2",
    )


def test_list_reads_sealed_segments(tmp_path) -> None:
    store = ModelStore(str(tmp_path), model="m", segment_size=8)
    for i in range(1, 30):
        store.commit(pa.table({"w": [float(i)]}), Lineage(events=i))
    segments = sorted(os.listdir(tmp_path / "m" / "index"))
    assert segments[:3] == [
        "000000000001-000000000008.json",
        "000000000009-000000000016.json",
        "000000000017-000000000024.json",
    ]
    assert "tail.json" in segments
    infos = store.list()
    assert [i.version for i in infos] == list(range(1, 30))
    assert [i.lineage.events for i in infos] == list(range(1, 30))
    # sealed versions are listed from their segment even once their commit records are gone
    assert store.retain(keep_last=3) == list(range(1, 27))
    assert not os.path.exists(tmp_path / "m" / "commits" / "000000000001.json")
    assert os.path.exists(tmp_path / "m" / "commits" / "000000000025.json")  # not sealed yet
    infos = store.list()
    assert [i.version for i in infos] == list(range(1, 30))
    assert [i.version for i in infos if i.available] == [27, 28, 29]
    assert store.info(3).available is False
    with pytest.raises(VersionNotFound, match="deleted by retention"):
        store.get(3)


def test_recovers_from_a_writer_that_died_mid_commit(store: ModelStore, tmp_path) -> None:
    for i in range(1, 4):
        store.commit(pa.table({"w": [float(i)]}))
    model_dir = tmp_path / "models" / "m"
    # as if the writer of version 3 died after its commit record, before HEAD and the index
    (model_dir / "HEAD.json").write_bytes(Head(latest=2).to_json())
    (model_dir / "index" / "tail.json").unlink()
    assert [i.version for i in store.list()] == [1, 2, 3]  # found by probing commit records
    assert store.commit(pa.table({"w": [4.0]})) == 4  # number 3 is not reused
    assert store.get(3).table.column("w").to_pylist() == [3.0]
    assert store.get(4).lineage.parents == (3,)
    assert store.latest() == 4


def test_a_loaded_version_survives_retention(store: ModelStore) -> None:
    store.commit(pa.table({"w": np.ones(1000)}))
    held = store.get(1)
    for i in range(3):
        store.commit(pa.table({"w": np.zeros(10) + i}))
    assert store.retain(keep_last=1) == [1, 2, 3]
    assert held.table.column("w").to_numpy().sum() == 1000.0  # memory map outlives the unlink


def test_grace_period_keeps_recently_superseded(store: ModelStore) -> None:
    for i in range(3):
        store.commit(pa.table({"w": [float(i)]}))
    assert store.retain(keep_last=1, grace_s=3600) == []
    assert store.retain(keep_last=1) == [1, 2]


def test_injected_filesystem(tmp_path) -> None:
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    store = ModelStore("stores/x", model="m", filesystem=fs)  # generic pyarrow path
    assert store.commit(pa.table({"w": [1.0]})) == 1
    assert store.commit(pa.table({"w": [2.0]})) == 2
    assert store.get().table.column("w").to_pylist() == [2.0]
    assert (tmp_path / "stores" / "x" / "m" / "HEAD.json").exists()
    assert store.retain(keep_last=1) == [1]


def test_a_store_written_when_snapshots_were_kind_publish_reads_them_as_snapshots(tmp_path):
    """Earlier releases named a whole-model version's kind "publish" in its commit record;
    such a store still reads, and lists those versions as snapshots."""
    old = ModelStore(str(tmp_path), "m")
    old.commit(pa.table({"w": [1.0]}), Lineage(events=1))
    old.commit(pa.table({"w": [2.0]}), Lineage(events=2))
    for record in (tmp_path / "m").rglob("*.json"):
        text = record.read_text()
        record.write_text(text.replace('"kind":"snapshot"', '"kind":"publish"'))
    assert '"kind":"publish"' in (tmp_path / "m" / "commits" / "000000000001.json").read_text()
    store = ModelStore(str(tmp_path), "m")
    assert [(i.version, i.kind) for i in store.list()] == [(1, "snapshot"), (2, "snapshot")]
    assert store.get().table.column("w").to_pylist() == [2.0]
