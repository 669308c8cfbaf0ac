"""Turn a store URI into a pyarrow filesystem and a root path.

``./path`` or ``file:///path`` gives the local filesystem; ``s3://bucket/prefix``
gives :class:`pyarrow.fs.S3FileSystem`, configured from the URI's query options
and then the usual environment variables; anything else pyarrow understands
(``hdfs://``, ``gs://``) goes through :meth:`pyarrow.fs.FileSystem.from_uri`.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlsplit

import pyarrow.fs as pafs

from streamlearn.errors import ConfigError

__all__ = ["DEFAULT_STORE", "resolve", "S3_OPTIONS"]

DEFAULT_STORE = "./.streamlearn/models"

#: Query options an ``s3://`` URI accepts, and the environment variable each falls back to.
S3_OPTIONS: dict[str, tuple[str, ...]] = {
    "endpoint_override": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "scheme": (),
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "access_key": ("AWS_ACCESS_KEY_ID",),
    "secret_key": ("AWS_SECRET_ACCESS_KEY",),
    "session_token": ("AWS_SESSION_TOKEN",),
    "allow_bucket_creation": (),
}


def _s3(uri: str) -> tuple[pafs.FileSystem, str]:
    parts = urlsplit(uri)
    if not parts.netloc:
        raise ConfigError("store", "s3://BUCKET[/PREFIX][?options]", repr(uri))
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - set(S3_OPTIONS))
    if unknown:
        raise ConfigError(f"store option {unknown[0]!r}", f"one of {sorted(S3_OPTIONS)}", repr(uri))
    options: dict[str, object] = {}
    for name, env_names in S3_OPTIONS.items():
        value = query.get(name)
        if value is None:
            value = next((os.environ[e] for e in env_names if os.environ.get(e)), None)
        if value is not None:
            options[name] = value
    endpoint = options.get("endpoint_override")
    if isinstance(endpoint, str) and "://" in endpoint:  # AWS_ENDPOINT_URL carries a scheme
        scheme, _, host = endpoint.partition("://")
        options["endpoint_override"] = host.rstrip("/")
        options.setdefault("scheme", scheme)
    if "allow_bucket_creation" in options:
        flag = str(options["allow_bucket_creation"]).lower()
        if flag not in {"true", "false", "1", "0"}:
            raise ConfigError("store option 'allow_bucket_creation'", "true or false", repr(flag))
        options["allow_bucket_creation"] = flag in {"true", "1"}
    if ("access_key" in options) != ("secret_key" in options):
        raise ConfigError(
            "store option 'access_key'/'secret_key'",
            "both or neither (URI options or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
            "only one",
        )
    fs = pafs.S3FileSystem(**options)
    root = (parts.netloc + "/" + parts.path.strip("/")).rstrip("/")
    return fs, root


def resolve(uri: str | os.PathLike[str] | None) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, root)`` for a store URI.

    Examples
    --------
    >>> fs, root = resolve("/tmp/models")
    >>> type(fs).__name__, root
    ('LocalFileSystem', '/tmp/models')
    >>> fs, root = resolve("s3://bucket/team/models?region=eu-west-1&endpoint_override=127.0.0.1:9000&scheme=http")
    >>> type(fs).__name__, root
    ('S3FileSystem', 'bucket/team/models')
    >>> try:
    ...     resolve("s3://bucket?colour=blue")
    ... except ConfigError as exc:
    ...     print(exc.field, "|", exc.got)
    store option 'colour' | 's3://bucket?colour=blue'
    """
    text = os.fspath(uri) if uri is not None else DEFAULT_STORE
    if not isinstance(text, str) or not text:
        raise ConfigError(
            "store", "a directory path or a URI such as s3://bucket/prefix", repr(uri)
        )
    if text.startswith("s3://"):
        return _s3(text)
    if "://" not in text:
        return pafs.LocalFileSystem(), os.path.abspath(text)
    if text.startswith("file://"):
        return pafs.LocalFileSystem(), os.path.abspath(urlsplit(text).path)
    try:
        fs, root = pafs.FileSystem.from_uri(text)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for unknown schemes
        raise ConfigError(
            "store", "a URI pyarrow can open (file, s3, hdfs, gs)", repr(text)
        ) from exc
    return fs, root.rstrip("/")
