"""Issue 13 item 7: customer tables (and model directories) in object storage, read through fsspec
against a real S3-compatible server (moto's server mode), credentials and endpoint from the
environment as a Secret fills it on a cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from churnflow.core.data import read_table
from churnflow.core.errors import ChurnflowError
from churnflow.core.synthetic import synthetic_customers

from .conftest import CHURNFLOW, free_port
from .daemons import Daemon

MOTO_SERVER = str(Path(sys.executable).with_name("moto_server"))


@pytest.fixture
def bucket(s3_server, monkeypatch):
    """A bucket with the synthetic customer table as customers.csv; the S3 environment set."""
    client = s3_server.client()
    name = f"customers-{time.monotonic_ns()}"
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="customers.csv", Body=synthetic_customers(200, 3).to_csv(index=False).encode())
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return name


def test_a_table_is_read_from_s3_and_minio_uris(bucket):
    expected = synthetic_customers(200, 3)
    for scheme in ("s3", "minio"):  # minio:// is S3 at AWS_ENDPOINT_URL (Kubeflow's MinIO when unset)
        table = read_table(f"{scheme}://{bucket}/customers.csv")
        assert list(table.columns) == list(expected.columns) and len(table) == len(expected)
        assert table["tenure"].astype(float).tolist() == expected["tenure"].astype(float).tolist()


def test_a_missing_object_is_one_line(bucket):
    with pytest.raises(ChurnflowError, match=rf"^data s3://{bucket}/nope\.csv: no such object"):
        read_table(f"s3://{bucket}/nope.csv")
    with pytest.raises(ChurnflowError, match=r"no such object"):
        read_table("s3://no-such-bucket-at-all/customers.csv")


def test_the_cli_reads_s3_and_fails_in_one_line(bucket, s3_server, tmp_path):
    env = {**os.environ, **s3_server.env()}
    missing = subprocess.run(
        [CHURNFLOW, "run", "--data", f"s3://{bucket}/gone.csv", "--output", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert missing.returncode == 2
    expected = f"churnflow: error: data s3://{bucket}/gone.csv: no such object (check the bucket and key)"
    assert missing.stderr.strip() == expected


@pytest.fixture(scope="module")
def authenticating_s3(tmp_path_factory):
    """A second moto server with IAM authentication on: moto checks signatures only after
    INITIAL_NO_AUTH_ACTION_COUNT unauthenticated calls, which here create the one real user and key."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = Daemon(
        [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)],
        f"{endpoint}/moto-api/",
        tmp_path_factory.mktemp("moto") / "moto.log",
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
    )
    try:
        import boto3

        anyone = {"aws_access_key_id": "x", "aws_secret_access_key": "x", "region_name": "us-east-1"}
        iam = boto3.client("iam", endpoint_url=endpoint, **anyone)
        iam.create_user(UserName="reader")  # unauthenticated call 1
        policy = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}'
        iam.put_user_policy(UserName="reader", PolicyName="s3", PolicyDocument=policy)  # 2
        key = iam.create_access_key(UserName="reader")["AccessKey"]  # 3: from here on, signatures count
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="private")
        s3.put_object(Bucket="private", Key="customers.csv", Body=synthetic_customers(50, 1).to_csv(index=False))
        yield endpoint, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        moto.stop()


def test_wrong_credentials_are_one_line(authenticating_s3, monkeypatch):
    endpoint, access_key, secret_key = authenticating_s3
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    assert len(read_table("s3://private/customers.csv")) == 50  # the right key reads
    for wrong_key, wrong_secret in ((access_key, "not-the-secret"), ("AKIAUNKNOWN000000000", secret_key)):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", wrong_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong_secret)
        with pytest.raises(ChurnflowError) as caught:
            read_table("s3://private/customers.csv")
        message = str(caught.value)
        assert message.startswith("data s3://private/customers.csv: access denied") and "\n" not in message, message
        assert "AWS_ACCESS_KEY_ID" in message


def test_a_model_directory_is_downloaded_from_s3(s3_server, monkeypatch, model_dir, tmp_path):
    """`churnflow serve --model-dir s3://...` without KServe's storage helper: fsspec fetches the directory."""
    from churnflow.core.released_model import resolve_model_dir

    client = s3_server.client()
    client.create_bucket(Bucket="models")
    for path in Path(model_dir).rglob("*"):
        if path.is_file():
            client.upload_file(str(path), "models", f"churn/{path.relative_to(model_dir)}")
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    local = resolve_model_dir("s3://models/churn")
    assert sorted(p.name for p in local.iterdir()) == sorted(p.name for p in Path(model_dir).iterdir())
    with pytest.raises(ChurnflowError, match=r"^model URI s3://models/absent: no such object"):
        resolve_model_dir("s3://models/absent")


GCS_READ = """
import sys
from churnflow.core.data import read_table
from churnflow.core.errors import ChurnflowError
print(len(read_table(sys.argv[1])))
try:
    read_table(sys.argv[2])
except ChurnflowError as error:
    print(error)
"""


def test_a_table_is_read_from_gcs(tmp_path):
    """gs:// through gcsfs against a local GCS API (gcp-storage-emulator). In a child process whose Google
    auth never looks for a metadata server (that lookup would leave loopback)."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    emulator = Daemon(
        [str(Path(sys.executable).with_name("gcp-storage-emulator")), "start", "--host", "127.0.0.1"]
        + ["--port", str(port), "--in-memory", "--default-bucket", "customers"],
        f"{endpoint}/storage/v1/b",
        tmp_path / "gcs-emulator.log",
    )
    try:
        body = synthetic_customers(60, 2).to_csv(index=False).encode()
        upload = httpx.post(
            f"{endpoint}/upload/storage/v1/b/customers/o",
            params={"uploadType": "media", "name": "table/customers.csv"},
            content=body,
            timeout=10,
        )
        assert upload.status_code == 200, upload.text
        env = {
            **os.environ,
            "STORAGE_EMULATOR_HOST": endpoint,
            "NO_GCE_CHECK": "true",
            "GCE_METADATA_HOST": "127.0.0.1:9",
            "GCE_METADATA_IP": "127.0.0.1:9",
        }
        done = subprocess.run(
            [sys.executable, "-c", GCS_READ, "gs://customers/table/customers.csv", "gs://customers/table/gone.csv"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        rows, error = done.stdout.strip().splitlines()
        assert rows == "60"
        assert error == "data gs://customers/table/gone.csv: no such object (check the bucket and key)"
    finally:
        emulator.stop()
