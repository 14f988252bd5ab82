"""A real S3-speaking server for the tests: moto's server mode, on a local port, reached over a
socket by boto3 (through django-storages) exactly as Amazon S3 is in production. It refuses what
S3 refuses that matters here: unsigned (anonymous) reads of private objects, invalid bucket
names, unknown buckets and keys.

Import the fixtures into a conftest: ``from tests.s3 import s3_server, s3_bucket  # noqa: F401``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

REGION = "eu-west-1"
ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )


@dataclass(frozen=True)
class S3Bucket:
    server: S3Server
    name: str
    prefix: str

    def keys(self) -> list[str]:
        listing = self.server.client().list_objects_v2(Bucket=self.name)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.server.client().get_object(Bucket=self.name, Key=key)["Body"].read()


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield S3Server(endpoint_url=f"http://{host}:{port}")
    server.stop()


def s3_storage_settings(*, endpoint_url: str, bucket: str, prefix: str = "", **options) -> dict:
    """settings.STORAGES with the default storage in ``bucket``, as config/settings.py makes it
    from AWS_STORAGE_BUCKET_NAME (plus test credentials and short timeouts)."""
    from botocore.config import Config
    from django.conf import settings

    return {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "region_name": REGION,
                "endpoint_url": endpoint_url,
                "location": prefix,
                "access_key": ACCESS_KEY,
                "secret_key": SECRET_KEY,
                "default_acl": None,
                "querystring_auth": True,
                "querystring_expire": 300,
                "file_overwrite": False,
                "client_config": Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"}),
                **options,
            },
        },
    }


@pytest.fixture
def s3_bucket(s3_server, settings) -> S3Bucket:
    """A new private bucket, made the default storage (where receipts go) for this test."""
    name = f"receipts-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    settings.STORAGES = s3_storage_settings(endpoint_url=s3_server.endpoint_url, bucket=name, prefix="media")
    return S3Bucket(server=s3_server, name=name, prefix="media")
