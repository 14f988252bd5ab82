"""An account's IP allowlist on the webhook endpoint: 403 ``ip_not_allowed`` for an address
outside it, checked after the account is found and before the signature; the client address
behind trusted proxies (TRUSTED_PROXIES, X-Forwarded-For); the address stored with the event."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from core.client_ip import client_ip
from core.ip_allowlist import IpAllowlistInvalid, _networks, ip_allowlist_allows, ip_allowlist_parse
from payments.models import AuditLog, Payment, WebhookEvent
from tests.conftest import sign, surepay_body

pytestmark = pytest.mark.django_db


def deliver(client, body: bytes, *, remote_addr: str, forwarded_for: str | None = None, signature: str | None = None):
    extra = {"REMOTE_ADDR": remote_addr, "HTTP_X_SCHOOL_CODE": "ng", "HTTP_X_SIGNATURE": signature or sign(body)}
    if forwarded_for is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return client.post("/api/webhooks/surepay", data=body, content_type="application/json", **extra)


def refused_body(address: str) -> dict:
    return {"detail": f"Address {address} is not in this account's IP allowlist", "code": "ip_not_allowed"}


def allow(account, allowlist: str) -> None:
    account.ip_allowlist = allowlist
    account.save()  # clears the cached account


def assert_nothing_stored():
    assert WebhookEvent.objects.count() == 0
    assert Payment.objects.count() == 0


# --- Refused ---------------------------------------------------------------------------------


def test_an_address_outside_the_allowlist_is_403_with_only_an_audit_entry(client, account):
    allow(account, "203.0.113.0/24")
    body = surepay_body()
    response = deliver(client, body, remote_addr="198.51.100.9")
    assert response.status_code == 403
    assert response.json() == refused_body("198.51.100.9")
    assert_nothing_stored()
    (audit,) = AuditLog.objects.filter(action="webhook.refused")
    assert (audit.actor, audit.school_id, audit.target_type, audit.target_id) == (
        "surepay",
        account.school_id,
        "ProviderAccount",
        str(account.pk),
    )
    assert audit.details == {
        "reason": "ip_not_allowed",
        "school_code": "ng",
        "remote_addr": "198.51.100.9",
        "body_bytes": len(body),
    }


def test_the_address_is_checked_before_the_signature(client, account):
    """A refused address learns nothing about the secret: a wrong signature gets the same 403."""
    allow(account, "203.0.113.7")
    body = surepay_body()
    response = deliver(client, body, remote_addr="198.51.100.9", signature=sign(body, "guess"))
    assert (response.status_code, response.json()) == (403, refused_body("198.51.100.9"))
    assert list(AuditLog.objects.values_list("details__reason", flat=True)) == ["ip_not_allowed"]


def test_a_refusal_is_counted_by_outcome(client, account):
    def count() -> float:
        labels = {"provider": "surepay", "outcome": "ip_not_allowed"}
        return REGISTRY.get_sample_value("webhooks_received_total", labels) or 0.0

    allow(account, "203.0.113.7")
    before = count()
    body = surepay_body()
    deliver(client, body, remote_addr="198.51.100.9")
    assert count() == before + 1


def test_a_signed_delivery_from_an_allowed_address_is_then_checked_as_usual(client, account):
    allow(account, "203.0.113.7")
    body = surepay_body()
    response = deliver(client, body, remote_addr="203.0.113.7", signature=sign(body, "guess"))
    assert response.status_code == 401
    assert response.json()["code"] == "signature_invalid"


# --- Allowed ---------------------------------------------------------------------------------


def test_an_allowed_address_is_accepted_and_stored_with_the_event(client, account):
    allow(account, "203.0.113.7")
    body = surepay_body()
    response = deliver(client, body, remote_addr="203.0.113.7")
    assert response.status_code == 202
    assert response.json() == {"detail": "Webhook accepted", "event_id": "evt-001", "status": "pending"}
    assert WebhookEvent.objects.get().remote_addr == "203.0.113.7"


@pytest.mark.parametrize(
    ("allowlist", "address", "allowed"),
    [
        ("203.0.113.0/24", "203.0.113.200", True),
        ("203.0.113.0/24", "203.0.114.1", False),
        ("203.0.113.7/24", "203.0.113.1", True),  # host bits set: the network it is in
        ("2001:db8::/32", "2001:db8:1::7", True),
        ("2001:db8::/32", "2001:db9::7", False),
        ("2001:db8::7", "2001:0db8:0000::0007", True),  # the same address, spelled differently
        ("0.0.0.0/0", "2001:db8::7", False),  # an IPv4 network never holds an IPv6 address
        ("203.0.113.7", "::ffff:203.0.113.7", True),  # an IPv4 peer on a dual-stack socket
        ("# SurePay, per their docs\n\n203.0.113.7  # primary\n198.51.100.0/28\n", "198.51.100.14", True),
        ("# SurePay, per their docs\n\n203.0.113.7  # primary\n198.51.100.0/28\n", "198.51.100.16", False),
    ],
)
def test_addresses_networks_and_ipv6(client, account, allowlist, address, allowed):
    allow(account, allowlist)
    body = surepay_body()
    response = deliver(client, body, remote_addr=address)
    assert response.status_code == (202 if allowed else 403)


@pytest.mark.parametrize("allowlist", ["", "  \n", "# none yet\n\n"])
def test_an_allowlist_without_entries_allows_every_address(client, account, allowlist):
    allow(account, allowlist)
    body = surepay_body()
    assert deliver(client, body, remote_addr="198.51.100.9").status_code == 202
    assert WebhookEvent.objects.get().remote_addr == "198.51.100.9"


def test_an_allowlist_is_parsed_once_not_per_delivery(client, account, django_assert_num_queries):
    allow(account, "203.0.113.0/24\n2001:db8::/32")
    first = surepay_body(event_id="warm")
    assert deliver(client, first, remote_addr="203.0.113.1").status_code == 202
    parsed = _networks.cache_info().misses
    body = surepay_body()
    # The hot path stays one insert.
    with django_assert_num_queries(1):
        assert deliver(client, body, remote_addr="203.0.113.2").status_code == 202
    assert _networks.cache_info().misses == parsed


# --- Behind trusted proxies ------------------------------------------------------------------


@pytest.fixture
def behind_proxy(settings, account):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "fd00::/8"]
    allow(account, "203.0.113.7")
    return account


def test_behind_a_trusted_proxy_the_client_is_the_right_most_untrusted_hop(client, behind_proxy):
    body = surepay_body()
    # The client claims to be 192.0.2.1; two of our proxies appended what they saw.
    response = deliver(client, body, remote_addr="10.0.0.2", forwarded_for="192.0.2.1, 203.0.113.7, 10.0.0.3")
    assert response.status_code == 202
    assert WebhookEvent.objects.get().remote_addr == "203.0.113.7"


def test_a_forged_left_most_entry_behind_a_trusted_proxy_is_ignored(client, behind_proxy):
    body = surepay_body()
    response = deliver(client, body, remote_addr="10.0.0.2", forwarded_for="203.0.113.7, 198.51.100.9")
    assert (response.status_code, response.json()) == (403, refused_body("198.51.100.9"))
    assert AuditLog.objects.get(action="webhook.refused").details["remote_addr"] == "198.51.100.9"


def test_x_forwarded_for_from_an_untrusted_client_is_ignored(client, behind_proxy):
    body = surepay_body()
    response = deliver(client, body, remote_addr="198.51.100.9", forwarded_for="203.0.113.7")
    assert (response.status_code, response.json()) == (403, refused_body("198.51.100.9"))
    assert_nothing_stored()


def test_without_trusted_proxies_x_forwarded_for_is_ignored(client, account):
    allow(account, "203.0.113.7")
    body = surepay_body()
    response = deliver(client, body, remote_addr="10.0.0.2", forwarded_for="203.0.113.7")
    assert (response.status_code, response.json()) == (403, refused_body("10.0.0.2"))


def test_a_malformed_forwarded_entry_makes_the_client_unknown(client, behind_proxy):
    body = surepay_body()
    response = deliver(client, body, remote_addr="10.0.0.2", forwarded_for="203.0.113.7, not-an-ip")
    assert (response.status_code, response.json()) == (403, refused_body("(unknown)"))
    assert AuditLog.objects.get(action="webhook.refused").details["remote_addr"] is None


def test_a_malformed_forwarded_entry_does_not_break_an_account_without_allowlist(client, behind_proxy):
    allow(behind_proxy, "")
    body = surepay_body()
    response = deliver(client, body, remote_addr="10.0.0.2", forwarded_for="203.0.113.7:4433")
    assert response.status_code == 202
    assert WebhookEvent.objects.get().remote_addr is None


@pytest.mark.parametrize(
    ("remote_addr", "forwarded_for", "expected"),
    [
        ("198.51.100.9", None, "198.51.100.9"),  # not a proxy: X-Forwarded-For never read
        ("198.51.100.9", "203.0.113.7", "198.51.100.9"),
        ("10.1.2.3", None, "10.1.2.3"),  # the proxy's own request
        ("10.1.2.3", "", "10.1.2.3"),
        ("10.1.2.3", "203.0.113.7", "203.0.113.7"),
        ("10.1.2.3", "203.0.113.7,10.9.9.9", "203.0.113.7"),
        ("10.1.2.3", " 192.0.2.1 ,203.0.113.7 , 10.9.9.9 ", "203.0.113.7"),
        ("10.1.2.3", "10.4.4.4, 10.9.9.9", "10.4.4.4"),  # all ours: the left-most
        ("fd00::1", "2001:db8::7", "2001:db8::7"),
        ("::ffff:10.1.2.3", "203.0.113.7", "203.0.113.7"),  # the proxy over a dual-stack socket
        ("10.1.2.3", "2001:DB8:0::7", "2001:db8::7"),  # stored in its normal form
        ("10.1.2.3", "192.0.2.1, garbage, 10.9.9.9", None),
        ("10.1.2.3", "203.0.113.7,,10.9.9.9", None),
        ("10.1.2.3", "[2001:db8::7]:443", None),
        ("", "203.0.113.7", None),
    ],
)
def test_client_ip(settings, remote_addr, forwarded_for, expected):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "fd00::/8"]
    meta = {"REMOTE_ADDR": remote_addr}
    if forwarded_for is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded_for
    assert client_ip(meta) == expected


def test_client_ip_without_trusted_proxies_is_remote_addr(settings):
    settings.TRUSTED_PROXIES = []
    assert client_ip({"REMOTE_ADDR": "10.1.2.3", "HTTP_X_FORWARDED_FOR": "203.0.113.7"}) == "10.1.2.3"


# --- Parsing ---------------------------------------------------------------------------------


def test_parse_names_the_bad_line():
    with pytest.raises(IpAllowlistInvalid) as raised:
        ip_allowlist_parse("# office\n203.0.113.7\n\n203.0.113.300\n")
    assert str(raised.value) == (
        "line 4: '203.0.113.300' is not an IP address or CIDR network "
        "(for example 203.0.113.7, 203.0.113.0/24 or 2001:db8::/32)"
    )


def test_a_stored_bad_line_allows_nothing_and_the_rest_still_applies():
    """An allowlist saved around the form's check (a shell) must not break deliveries."""
    assert ip_allowlist_allows("203.0.113.7\nexample.org", "203.0.113.7")
    assert not ip_allowlist_allows("203.0.113.7\nexample.org", "198.51.100.9")
    assert not ip_allowlist_allows("example.org", "198.51.100.9")  # entries, none valid: refuse
    assert not ip_allowlist_allows("203.0.113.7", None)
