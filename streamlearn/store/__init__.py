"""Versioned models on any pyarrow filesystem (local, S3, HDFS).

>>> import tempfile, pyarrow as pa
>>> from streamlearn.store import ModelStore, Lineage
>>> store = ModelStore(tempfile.mkdtemp(), model="demo")
>>> store.commit(pa.table({"w": [1.0, 2.0]}), Lineage(events=10, learners=("l0",)))
1
>>> store.get(1).lineage.learners
('l0',)

See ``docs/store.md`` for the layout, the commit protocol and what it relies on.
"""

from streamlearn.store.delta import (
    BrokenChain,
    Chain,
    Changes,
    SnapshotPolicy,
    StaleParent,
    Update,
)
from streamlearn.store.lease import Lease, LeaseError, WriterBusy, WriterFenced, WriterInfo
from streamlearn.store.lineage import Lineage
from streamlearn.store.location import DEFAULT_STORE
from streamlearn.store.model_store import DEFAULT_MODEL, ModelStore
from streamlearn.store.records import Head, ModelVersion, VersionInfo
from streamlearn.store.version_file import ToBytes

__all__ = [
    "ModelStore",
    "Lineage",
    "Head",
    "VersionInfo",
    "ModelVersion",
    "ToBytes",
    "Lease",
    "WriterInfo",
    "LeaseError",
    "WriterBusy",
    "WriterFenced",
    "Changes",
    "Update",
    "Chain",
    "SnapshotPolicy",
    "BrokenChain",
    "StaleParent",
    "DEFAULT_STORE",
    "DEFAULT_MODEL",
]
