"""Where bulk tables and model directories live: a path, file://, s3://, minio:// or gs://, via fsspec.

Credentials and endpoints come the way they reach a pod: the standard AWS variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...) for s3:// and minio://, Google's application default
credentials for gs://. `minio://bucket/key` is S3 at $MINIO_ENDPOINT_URL (or $AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from churnflow.errors import ChurnflowError

SCHEMES = ("file", "s3", "minio", "gs", "gcs")


def filesystem(uri: str, what: str = "data") -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for a URI or a local path."""
    import fsspec

    scheme = urlparse(uri).scheme.lower()
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        return fsspec.filesystem("file"), str(Path(uri).absolute())
    if scheme not in SCHEMES:
        raise ChurnflowError(
            f"{what} {uri}: unsupported URI scheme {scheme!r} (expected a path, "
            f"{', '.join(s + '://' for s in SCHEMES)})"
        )
    rest = uri.split("://", 1)[1]
    try:
        if scheme == "file":
            return fsspec.filesystem("file"), rest
        if scheme in ("s3", "minio"):
            endpoint = os.environ.get("MINIO_ENDPOINT_URL") if scheme == "minio" else None
            endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
            options = {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
            return fsspec.filesystem("s3", **options), rest
        return fsspec.filesystem("gcs"), rest
    except ImportError as error:
        raise ChurnflowError(
            f"{what} {uri}: reading {scheme}:// needs the storage extra (pip install 'churnflow[storage]'): {error}"
        ) from None


def local_directory(uri: str, what: str = "model directory") -> Path:
    """A local directory with the URI's files: the path itself, or a downloaded copy of a remote prefix."""
    from fsspec.implementations.local import LocalFileSystem

    fs, path = filesystem(uri, what)
    if isinstance(fs, LocalFileSystem):
        local = Path(path)
        if not local.is_dir():
            raise ChurnflowError(f"{what} {uri}: no such directory")
        return local
    target = Path(tempfile.mkdtemp(prefix="churnflow-model-"))
    try:
        names = [name for name in fs.find(path) if not name.endswith("/")]
    except OSError as error:
        raise ChurnflowError(f"{what} {uri}: cannot list it ({error})") from None
    if not names:
        raise ChurnflowError(f"{what} {uri}: no files there")
    root = path.rstrip("/") + "/"
    for name in names:
        destination = target / name.removeprefix(root)
        destination.parent.mkdir(parents=True, exist_ok=True)
        fs.get(name, str(destination))
    return target
