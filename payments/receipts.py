"""Receipts a parent uploads with a manual payment: an image or a PDF, checked by content.

The type is read from the file's first bytes, never from its name or the browser's claim: a
receipt ends up in front of staff, so an HTML or SVG file posing as a picture must not get
through. The size limit is ``MANUAL_RECEIPT_MAX_BYTES``.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile


class ReceiptInvalid(ValueError):
    """The message is safe to show to the parent."""


@dataclass(frozen=True)
class ReceiptType:
    content_type: str
    extension: str


# Magic numbers of the types we accept. https://www.garykessler.net/library/file_sigs.html
_SIGNATURES: list[tuple[bytes, int, ReceiptType]] = [
    (b"%PDF-", 0, ReceiptType("application/pdf", "pdf")),
    (b"\x89PNG\r\n\x1a\n", 0, ReceiptType("image/png", "png")),
    (b"\xff\xd8\xff", 0, ReceiptType("image/jpeg", "jpg")),
    (b"WEBP", 8, ReceiptType("image/webp", "webp")),
]
ACCEPTED_TYPES = "PDF, JPEG, PNG or WebP"
# For the file input's ``accept`` attribute: a hint to the browser, not a check.
ACCEPT_ATTRIBUTE = "application/pdf,image/jpeg,image/png,image/webp"


def size_text(size: int) -> str:
    """``5242880`` -> ``"5 MB"``, ``1024`` -> ``"1 KB"``: how limits are shown to parents."""
    if size >= 1024 * 1024 and size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MB"
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    return f"{max(1, size // 1024)} KB"


def receipt_check(file: UploadedFile) -> ReceiptType:
    """The receipt's real type, or ``ReceiptInvalid`` when it is empty, too large or not a
    PDF or image we accept."""
    limit = settings.MANUAL_RECEIPT_MAX_BYTES
    if file.size is None or file.size == 0:
        raise ReceiptInvalid("The receipt file is empty.")
    if file.size > limit:
        raise ReceiptInvalid(f"The receipt is larger than {size_text(limit)}.")
    file.seek(0)
    head = file.read(16)
    file.seek(0)
    for magic, offset, kind in _SIGNATURES:
        # WebP is a RIFF container: "RIFF", the size, then "WEBP".
        if head[offset : offset + len(magic)] == magic and (kind.extension != "webp" or head.startswith(b"RIFF")):
            return kind
    raise ReceiptInvalid(f"The receipt must be a {ACCEPTED_TYPES} file.")


# --- Storage -----------------------------------------------------------------------------------
# Receipts live in the default storage: an S3 bucket in production, the local disk otherwise
# (settings.STORAGES). With S3 every call is a network call that can fail or time out.


class ReceiptStorageUnavailable(RuntimeError):
    """The receipt storage could not be reached; the message is safe to show."""

    def __init__(self) -> None:
        super().__init__("The receipt could not be stored or read just now. Please try again in a few minutes.")


class ReceiptMissing(LookupError):
    """The payment names a receipt file that the storage does not have."""


def _storage_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - boto3 is a runtime requirement
        pass
    else:
        errors += [BotoCoreError, ClientError]
    return tuple(errors)


def _is_not_found(exc: BaseException) -> bool:
    if isinstance(exc, FileNotFoundError):
        return True
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code")) in {"404", "NoSuchKey", "NotFound"}


def receipt_store(*, school_code: str, file: UploadedFile, kind: ReceiptType) -> str:
    """Write a checked receipt to storage under a new random name; returns that name."""
    from payments.models import Payment, School

    field = Payment._meta.get_field("receipt")
    name = field.generate_filename(Payment(school=School(code=school_code)), f"receipt.{kind.extension}")
    file.seek(0)
    try:
        return field.storage.save(name, file, max_length=field.max_length)
    except _storage_errors() as exc:
        raise ReceiptStorageUnavailable() from exc


def receipt_discard(name: str) -> None:
    """Best effort: delete a stored receipt that no payment will name (its report was refused)."""
    from payments.models import Payment

    try:
        Payment._meta.get_field("receipt").storage.delete(name)
    except _storage_errors():
        pass


def receipt_open(field_file):
    """``(file, size)`` of a payment's stored receipt, for streaming to staff. Raises
    ``ReceiptMissing`` when the storage has no such file, ``ReceiptStorageUnavailable`` when it
    cannot be reached. The size is asked first, so a failure is known before any byte is sent."""
    try:
        size = field_file.size
        return field_file.storage.open(field_file.name, "rb"), size
    except _storage_errors() as exc:
        if _is_not_found(exc):
            raise ReceiptMissing(field_file.name) from exc
        raise ReceiptStorageUnavailable() from exc
