"""Object storage (s3://, minio://, gs://) through fsspec, with credentials from the environment.

On a cluster a Secret fills the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL
for S3 and MinIO; GOOGLE_APPLICATION_CREDENTIALS or the node's identity for GCS), so nothing secret
travels as a pipeline parameter. Every failure becomes one ChurnflowError line naming the URI and
what to check, never a botocore traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any
from urllib.parse import urlparse

from churnflow.errors import ChurnflowError

OBJECT_SCHEMES = ("s3", "minio", "gs", "gcs")
KUBEFLOW_MINIO = "http://minio-service.kubeflow:9000"
"""Kubeflow's own MinIO, where KFP's minio:// artifact URIs live (plain HTTP inside the cluster)."""
EXTRA_HINT = "pip install 'churnflow[storage]' (s3fs, gcsfs)"


def is_object_uri(uri: str) -> bool:
    return urlparse(uri).scheme.lower() in OBJECT_SCHEMES


def filesystem(uri: str) -> tuple[Any, str]:
    """The fsspec filesystem for `uri` and the path within it (bucket/key).

    minio:// is S3 at AWS_ENDPOINT_URL, or at Kubeflow's MinIO when that is unset. s3:// uses
    AWS_ENDPOINT_URL when set (any S3-compatible server), else AWS itself.
    """
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    path = f"{parsed.netloc}{parsed.path}"
    if not parsed.netloc or not parsed.path.strip("/"):
        raise ChurnflowError(f"{uri}: expected {scheme}://BUCKET/KEY")
    try:
        import fsspec

        if scheme in ("s3", "minio"):
            endpoint = os.environ.get("AWS_ENDPOINT_URL", "") or (KUBEFLOW_MINIO if scheme == "minio" else "")
            options: dict[str, Any] = {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
            return fsspec.filesystem("s3", skip_instance_cache=True, **options), path
        return fsspec.filesystem("gcs", skip_instance_cache=True), path
    except ImportError:
        raise ChurnflowError(f"{uri}: reading {scheme}:// needs the storage extra: {EXTRA_HINT}") from None


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
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "") or "the default endpoint"
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
    fs, path = filesystem(uri)
    try:
        if not fs.isdir(path):
            raise FileNotFoundError(path)
        fs.get(path.rstrip("/") + "/", target.rstrip("/") + "/", recursive=True)
    except ChurnflowError:
        raise
    except Exception as error:
        raise explain(uri, error) from None
    return target
