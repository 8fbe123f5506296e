"""Where tables and model directories live: a path, file://, s3://, minio:// or gs://, through fsspec.

Credentials and endpoints come the way they reach a pod, from the environment a Secret fills: the
standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL) for s3:// and
minio://, GOOGLE_APPLICATION_CREDENTIALS or the node's identity for gs://, so nothing secret travels as
a pipeline parameter. `minio://bucket/key` is S3 at $MINIO_ENDPOINT_URL, else $AWS_ENDPOINT_URL, else
Kubeflow's own MinIO. Every storage failure becomes one ChurnflowError line naming the URI and what to
check, never a botocore traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from churnflow.core.errors import ChurnflowError

OBJECT_SCHEMES = ("s3", "minio", "gs", "gcs")
SCHEMES = ("file", *OBJECT_SCHEMES)
KUBEFLOW_MINIO = "http://minio-service.kubeflow:9000"
"""Kubeflow's own MinIO, where KFP's minio:// artifact URIs live (plain HTTP inside the cluster)."""
EXTRA_HINT = "pip install 'churnflow[storage]' (s3fs, gcsfs)"


def is_object_uri(uri: str) -> bool:
    return urlparse(uri).scheme.lower() in OBJECT_SCHEMES


def _endpoint(scheme: str) -> str:
    if scheme == "minio":
        return os.environ.get("MINIO_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or KUBEFLOW_MINIO
    return os.environ.get("AWS_ENDPOINT_URL", "")


def filesystem(uri: str, what: str = "data") -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for a local path, file:// or an object-storage URI."""
    import fsspec

    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "":
        return fsspec.filesystem("file"), str(Path(uri).absolute())
    if scheme not in SCHEMES:
        raise ChurnflowError(
            f"{what} {uri}: unsupported URI scheme {scheme!r} (expected a path, "
            f"{', '.join(s + '://' for s in SCHEMES)})"
        )
    if scheme == "file":
        return fsspec.filesystem("file"), uri.split("://", 1)[1]
    if not parsed.netloc:
        raise ChurnflowError(f"{what} {uri}: expected {scheme}://BUCKET/KEY")
    path = f"{parsed.netloc}{parsed.path}"
    try:
        if scheme in ("s3", "minio"):
            endpoint = _endpoint(scheme)
            options: dict[str, Any] = {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
            return fsspec.filesystem("s3", skip_instance_cache=True, **options), path
        return fsspec.filesystem("gcs", skip_instance_cache=True), path
    except ImportError:
        raise ChurnflowError(f"{what} {uri}: reading {scheme}:// needs the storage extra: {EXTRA_HINT}") from None


def explain(uri: str, error: BaseException) -> ChurnflowError:
    """One line for a storage failure: missing object, refused credentials, unreachable endpoint."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, FileNotFoundError):
        return ChurnflowError(f"{uri}: no such object (check the bucket and key)")
    if isinstance(error, PermissionError) or any(
        code in text for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "401")
    ):
        return ChurnflowError(
            f"{uri}: access denied ({text}); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
            "(on a cluster: the pipeline's data_secret)"
        )
    endpoint = _endpoint(urlparse(uri).scheme.lower()) or "the default endpoint"
    return ChurnflowError(f"{uri}: cannot read it from {endpoint} ({text})")


@contextmanager
def open_object(uri: str, mode: str = "rb") -> Iterator[IO[bytes]]:
    """Opens an object for reading; every storage error leaves as one ChurnflowError."""
    fs, path = filesystem(uri)
    try:
        handle = fs.open(path, mode)
    except ChurnflowError:
        raise
    except Exception as error:  # botocore and aiohttp raise their own types; all are the user's to fix
        raise explain(uri, error) from None
    with handle:
        yield handle


def download_directory(uri: str, target: str) -> str:
    """Copies a directory of objects (a model artifact) to `target`; returns `target`."""
    fs, path = filesystem(uri, "model directory")
    try:
        if not fs.isdir(path):
            raise FileNotFoundError(path)
        fs.get(path.rstrip("/") + "/", target.rstrip("/") + "/", recursive=True)
    except ChurnflowError:
        raise
    except Exception as error:
        raise explain(uri, error) from None
    return target
