"""Receipts in object storage, as production keeps them: a private S3 bucket that every replica
shares, here a real S3-speaking server (moto's server mode, tests/s3.py) reached over a socket by
boto3 through django-storages. Staff get a receipt through the app, never from the bucket."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from django.core.files.storage import storages
from django.core.files.uploadedfile import SimpleUploadedFile

from payments.models import Payment
from tests.conftest import free_port
from tests.payments.conftest import make_staff
from tests.s3 import s3_storage_settings

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def report(client, payment_request, **fields):
    data = {"method": "bank_transfer", "amount": "450,000", "reference": "BANK-REF-991", **fields}
    return client.post(f"/pay/{payment_request.token}/manual", data)


def forget_storage_clients():
    """A new process, as far as storage goes: the next use builds its client anew from the
    settings (another replica reading what this one wrote)."""
    storages._storages.clear()
    from django.core.files.storage import default_storage

    default_storage._setup()


def test_a_parents_receipt_is_stored_in_the_bucket_not_on_the_disk(client, payment_request, s3_bucket, settings):
    response = report(client, payment_request, receipt=SimpleUploadedFile("photo of receipt.png", PNG))
    assert response.status_code == 302
    payment = Payment.objects.get()
    assert re.fullmatch(r"receipts/ng/[0-9a-f]{32}\.png", payment.receipt.name)
    assert s3_bucket.keys() == [f"media/{payment.receipt.name}"]
    assert s3_bucket.read(f"media/{payment.receipt.name}") == PNG
    assert not Path(settings.MEDIA_ROOT).exists() or not any(Path(settings.MEDIA_ROOT).rglob("*.png"))


def test_the_bucket_object_is_private(client, payment_request, s3_bucket, staff):
    report(client, payment_request, receipt=SimpleUploadedFile("r.pdf", PDF))
    payment = Payment.objects.get()
    key = f"media/{payment.receipt.name}"
    # An unsigned request for the object, as anyone on the internet could make: refused.
    anonymous = httpx.get(f"{s3_bucket.server.endpoint_url}/{s3_bucket.name}/{key}")
    assert anonymous.status_code == 403
    grants = s3_bucket.server.client().get_object_acl(Bucket=s3_bucket.name, Key=key)["Grants"]
    assert [grant["Permission"] for grant in grants] == ["FULL_CONTROL"]
    assert grants[0]["Grantee"]["Type"] == "CanonicalUser"  # the owner only, no AllUsers grant

    # Staff see a link to the app's own view, never to the bucket.
    client.force_login(staff)
    page = client.get(f"/admin/payments/payment/{payment.pk}/change/").content.decode()
    assert f"/admin/payments/payment/{payment.pk}/receipt/" in page
    assert s3_bucket.server.endpoint_url not in page and s3_bucket.name not in page


def test_staff_download_the_receipt_through_the_app_from_any_replica(client, payment_request, s3_bucket, staff):
    report(client, payment_request, receipt=SimpleUploadedFile("r.pdf", PDF))
    payment = Payment.objects.get()
    forget_storage_clients()
    client.force_login(staff)
    response = client.get(f"/admin/payments/payment/{payment.pk}/receipt/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Length"] == str(len(PDF))
    assert response["Content-Disposition"] == f'inline; filename="receipt-{payment.reference}.pdf"'
    assert b"".join(response.streaming_content) == PDF


def test_a_receipt_missing_from_the_bucket_is_not_found(client, payment_request, s3_bucket, staff):
    report(client, payment_request, receipt=SimpleUploadedFile("r.pdf", PDF))
    payment = Payment.objects.get()
    s3_bucket.server.client().delete_object(Bucket=s3_bucket.name, Key=f"media/{payment.receipt.name}")
    client.force_login(staff)
    assert client.get(f"/admin/payments/payment/{payment.pk}/receipt/").status_code == 404


def test_a_refused_report_leaves_no_file_in_the_bucket(client, payment_request, s3_bucket, settings):
    settings.MANUAL_PAYMENTS_PENDING_MAX = 1
    assert report(client, payment_request, reference="R1").status_code == 302
    response = report(client, payment_request, reference="R2", receipt=SimpleUploadedFile("r.png", PNG))
    assert response.status_code == 409
    assert s3_bucket.keys() == []
    assert Payment.objects.count() == 1


@pytest.fixture
def unreachable_storage(settings, s3_bucket):
    """The bucket's server stops answering: nothing listens on the configured port."""
    settings.STORAGES = s3_storage_settings(endpoint_url=f"http://127.0.0.1:{free_port()}", bucket=s3_bucket.name)
    return s3_bucket


def test_storage_down_a_parent_is_told_to_try_again_and_nothing_is_recorded(client, payment_request, unreachable_storage):
    response = report(client, payment_request, receipt=SimpleUploadedFile("r.png", PNG))
    assert response.status_code == 503
    assert "The receipt could not be stored or read just now. Please try again in a few minutes." in response.content.decode()
    assert Payment.objects.count() == 0


def test_storage_down_staff_get_a_503_not_an_error_page(client, payment_request, s3_bucket, staff, settings):
    report(client, payment_request, receipt=SimpleUploadedFile("r.pdf", PDF))
    payment = Payment.objects.get()
    settings.STORAGES = s3_storage_settings(endpoint_url=f"http://127.0.0.1:{free_port()}", bucket=s3_bucket.name)
    client.force_login(staff)
    response = client.get(f"/admin/payments/payment/{payment.pk}/receipt/")
    assert response.status_code == 503
    assert response.content.decode() == "The receipt could not be stored or read just now. Please try again in a few minutes."


def test_staff_of_another_school_cannot_download_it(client, payment_request, s3_bucket, other_school):
    report(client, payment_request, receipt=SimpleUploadedFile("r.pdf", PDF))
    payment = Payment.objects.get()
    client.force_login(make_staff("kla-bursar", other_school))
    assert client.get(f"/admin/payments/payment/{payment.pk}/receipt/").status_code in (403, 404)
