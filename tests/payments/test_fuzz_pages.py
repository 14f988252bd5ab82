"""Property-based: the parents' pages (pay link, "Pay now", "choose another way", the manual
form, the thanks page and its status poll, the dummy provider's page) with any token, query and
form fields answer a page or a clear 4xx, never a server error."""

from __future__ import annotations

import uuid
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzzing import count, hostile_text

pytestmark = [pytest.mark.django_db, pytest.mark.fuzz]

PAGES = ["", "checkout", "abandon", "manual"]
FIELDS = ["provider", "phone", "method", "amount", "reference", "payment_id", "outcome", "receipt", "csrfmiddlewaretoken"]


@pytest.fixture
def world(settings, payment_request, dummy_account):
    settings.RATELIMIT_ENABLE = False
    return payment_request


def _path_text(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@given(
    token=st.one_of(st.none(), st.none(), st.none(), hostile_text),  # mostly the real link
    page=st.sampled_from(PAGES),
    method=st.sampled_from(["GET", "POST", "POST", "POST"]),
    query=st.dictionaries(hostile_text, hostile_text, max_size=3),
    form=st.dictionaries(st.sampled_from(FIELDS), st.one_of(hostile_text, st.sampled_from(["dummy", "mpesa", "cash",
                         "bank_transfer", "450,000", "0712 345 678", str(uuid.uuid4())])), max_size=5),
)
def test_pay_link_pages(client, world, token, page, method, query, form):
    path_token = world.token if token is None else _path_text(token) or "x"
    url = f"/pay/{path_token}/{page}"
    if page == "":
        method = "GET"
    if query:
        url += "?" + urlencode(query, encoding="utf-8", errors="surrogatepass")
    form = {key: value.encode("utf-8", "surrogatepass").decode("latin-1") for key, value in form.items()}
    response = client.post(url, form) if method == "POST" else client.get(url)
    count("pages: pay link", response.status_code)
    assert response.status_code < 500


@given(
    payment_id=st.one_of(st.uuids().map(str), hostile_text.map(_path_text), st.just("existing")),
    page=st.sampled_from(["thanks", "status", "simulate"]),
    method=st.sampled_from(["GET", "POST"]),
    form=st.dictionaries(st.sampled_from(["outcome", "amount"]), st.one_of(hostile_text, st.sampled_from(["succeeded", "failed", "1"])), max_size=2),
)
def test_payment_pages(client, world, payment_id, page, method, form):
    if payment_id == "existing":
        started = client.post(f"/pay/{world.token}/checkout", {"provider": "dummy"})
        payment_id = started["Location"].rstrip("/").split("/")[-1] if started.status_code == 302 else str(uuid.uuid4())
    url = f"/payments/simulate/{payment_id}" if page == "simulate" else f"/payments/{payment_id}/{page}"
    form = {key: value.encode("utf-8", "surrogatepass").decode("latin-1") for key, value in form.items()}
    response = client.post(url, form) if method == "POST" else client.get(url)
    count("pages: payment", response.status_code)
    assert response.status_code < 500
