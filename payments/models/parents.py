"""A parent's magic link: the key to their own history at one school (payments.parents)."""

from __future__ import annotations

from django.db import models

from core.fields import EncryptedTextField
from payments.models.schools import School


class ParentAccessLink(models.Model):
    """One link sent to one parent's address for one school. Only the token's SHA-256 is looked
    up; the token itself is kept encrypted until the message carrying it is sent, then erased."""

    school = models.ForeignKey(School, on_delete=models.CASCADE, related_name="parent_links")
    # The address the link was sent to: the parent email of the school's payment requests.
    contact = models.CharField(max_length=254)
    token_digest = models.CharField(max_length=64, unique=True)
    token_to_send = EncryptedTextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    send_error = models.TextField(blank=True, default="")
    last_opened_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["school", "contact", "created_at"])]

    def __str__(self) -> str:
        return f"parent link {self.pk} @ {self.school_id}"
