"""Names read from store metadata never leave the model's directory (local disk and S3)."""

from __future__ import annotations

import posixpath

import orjson
import pyarrow as pa
import pytest

try:  # tests/ is a package in the full suite, a plain directory when run alone
    from tests.s3_server import s3_server, s3_uri  # noqa: F401  (pytest fixtures)
except ModuleNotFoundError:
    from s3_server import s3_server, s3_uri  # noqa: F401

from streamlearn.errors import StoreError
from streamlearn.store import ModelStore

BAD = "../../outside.arrow"


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path) -> ModelStore:
    if request.param == "local":
        return ModelStore(str(tmp_path / "models"), model="ctr")
    return ModelStore(request.getfixturevalue("s3_uri"), model="ctr")


def _rewrite(store: ModelStore, rel: str, change) -> None:
    path = f"{store.root}/ctr/{rel}"
    with store.filesystem.open_input_stream(path) as f:
        doc = orjson.loads(f.read())
    with store.filesystem.open_output_stream(path) as f:
        f.write(orjson.dumps(change(doc)))


def _exists(store: ModelStore, path: str) -> bool:
    import pyarrow.fs as pafs

    return store.filesystem.get_file_info(path).type == pafs.FileType.File


def test_a_tampered_file_name_is_refused_not_followed(store: ModelStore) -> None:
    store.commit(pa.table({"w": [1.0]}))
    store.commit(pa.table({"w": [2.0]}))
    # A valid copy of version 2 outside the store root: following the name would
    # load it without complaint, so only the check stands between.
    outside = posixpath.normpath(f"{store.root}/ctr/{BAD}")
    assert not outside.startswith(f"{store.root}/")
    with store.filesystem.open_input_stream(f"{store.root}/ctr/{store.info(2).file}") as f:
        copy = f.read()
    with store.filesystem.open_output_stream(outside) as f:
        f.write(copy)

    def tamper(record: dict) -> dict:
        return {**record, "file": BAD} if record["version"] == 2 else record

    _rewrite(store, "commits/000000000002.json", tamper)
    _rewrite(store, "index/tail.json", lambda records: [tamper(r) for r in records])

    pattern = r"model 'ctr' version 2: the commit record's `file` .*got '\.\./\.\./outside\.arrow'"
    for call in (store.get, store.info, store.pin):
        with pytest.raises(StoreError, match=pattern):
            call(2)
    for call in (store.list, lambda: store.retain(keep_last=1)):
        with pytest.raises(StoreError, match=pattern):
            call()
    assert _exists(store, outside), "retention must not delete what a record points at outside"
    assert store.get(1).table.column("w").to_pylist() == [1.0]  # the rest still reads


@pytest.mark.parametrize(
    "name",
    ["/etc/passwd", "versions/../../x.arrow", "versions/a/b.arrow", "versions/.hidden", "x.arrow",
     "versions/", 7],
)
def test_every_escaping_or_foreign_name_is_refused(tmp_path, name: object) -> None:
    store = ModelStore(str(tmp_path), model="ctr")
    store.commit(pa.table({"w": [1.0]}))
    _rewrite(store, "commits/000000000001.json", lambda r: {**r, "file": name})
    with pytest.raises(StoreError, match=f"version 1: the commit record's `file`.*got {name!r}"):
        store.get(1)


def test_a_tampered_head_or_record_number_is_refused(tmp_path) -> None:
    store = ModelStore(str(tmp_path), model="ctr")
    store.commit(pa.table({"w": [1.0]}))
    _rewrite(store, "HEAD.json", lambda h: {**h, "pinned": "../../x"})
    with pytest.raises(StoreError, match=r"model 'ctr': HEAD.json `pinned` .*got '\.\./\.\./x'"):
        store.get()
    _rewrite(store, "HEAD.json", lambda h: {**h, "pinned": None})
    _rewrite(store, "commits/000000000001.json", lambda r: {**r, "version": 9})
    with pytest.raises(StoreError, match="model 'ctr' version 1: the commit record's `version`"):
        store.get(1)
