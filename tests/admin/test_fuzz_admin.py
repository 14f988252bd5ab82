"""Property-based: every admin list, for a superuser and for a school's staff, with any filter,
search, ordering and page parameters (NUL bytes and other hostile text included), and every admin
action with any selection (malformed ids, other schools' ids, select-across) answers a page or a
4xx, never a server error, and never touches another school's rows."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.test import RequestFactory
from hypothesis import given
from hypothesis import strategies as st

from payments.models import AuditLog
from tests.admin.conftest import make_school_staff
from tests.fuzzing import count, hostile_text

pytestmark = [pytest.mark.django_db, pytest.mark.fuzz]

MODEL_ADMINS = sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)  # noqa: SLF001


def changelist_url(model) -> str:
    return f"/admin/{model._meta.app_label}/{model._meta.model_name}/"


def filter_parameters(model_admin, user) -> list[str]:
    """The query parameters the list's filters understand (e.g. status__exact, school)."""
    request = RequestFactory().get("/")
    request.user = user
    names = ["q", "o", "p", "e", "_to_field", "all", "_popup"]
    try:
        changelist = model_admin.get_changelist_instance(request)
    except Exception:  # noqa: BLE001 - a user without access to this admin: the generic names will do
        return names
    for spec in changelist.filter_specs:
        names += list(spec.expected_parameters())
    return names


@pytest.fixture
def users(world):
    from django.contrib.auth import get_user_model

    root = get_user_model().objects.create_superuser("root", "root@example.org", "pw-for-the-fuzz")
    return {"superuser": root, "staff": make_school_staff("fuzz-staff", world[0].school)}


@pytest.mark.parametrize("model_admin", [m for _, m in MODEL_ADMINS], ids=[m._meta.label for m, _ in MODEL_ADMINS])
def test_admin_list_with_hostile_parameters(client, users, model_admin):
    model = model_admin.model
    parameters = {role: filter_parameters(model_admin, user) for role, user in users.items()}

    @given(role=st.sampled_from(sorted(users)), examples=st.data())
    def check(role, examples):
        names = st.one_of(st.sampled_from(parameters[role]), hostile_text)
        query = examples.draw(st.dictionaries(names, st.one_of(hostile_text, st.integers().map(str)), max_size=4))
        client.force_login(users[role])
        url = changelist_url(model) + "?" + urlencode(query, encoding="utf-8", errors="surrogatepass")
        response = client.get(url)
        count("admin lists", response.status_code)
        assert response.status_code in (200, 302, 400, 403, 404), response.status_code

    check()


ACTIONABLE = [(model, model_admin) for model, model_admin in MODEL_ADMINS if model_admin.actions is not None]


@pytest.mark.parametrize("model_admin", [m for _, m in ACTIONABLE], ids=[m._meta.label for m, _ in ACTIONABLE])
def test_admin_actions_with_hostile_selections(client, users, world, model_admin):
    model = model_admin.model
    theirs = world[1]
    other_school_ids = [str(row.pk) for row in theirs.rows.values() if isinstance(row, model)]
    request = RequestFactory().get("/")
    request.user = users["superuser"]
    actions = sorted(model_admin.get_actions(request)) or ["delete_selected"]
    before = AuditLog.objects.filter(school=theirs.school).count()

    @given(
        action=st.one_of(st.sampled_from(actions), hostile_text),
        selected=st.lists(st.one_of(hostile_text, st.integers().map(str), st.uuids().map(str),
                                    st.sampled_from(other_school_ids or ["1"])), max_size=4),
        select_across=st.sampled_from(["0", "1", "x"]),
        index=st.sampled_from(["0", "1", "-1", "x"]),
    )
    def check(action, selected, select_across, index):
        client.force_login(users["staff"])
        form = {"action": action, ACTION_CHECKBOX_NAME: selected, "select_across": select_across, "index": index}
        form = {key: [v.encode("utf-8", "surrogatepass").decode("latin-1") for v in value] if isinstance(value, list)
                else value.encode("utf-8", "surrogatepass").decode("latin-1") for key, value in form.items()}
        response = client.post(changelist_url(model), form)
        count("admin actions", response.status_code)
        assert response.status_code in (200, 302, 400, 403, 404), response.status_code

    check()
    # School staff never reached the other school's rows through an action.
    assert AuditLog.objects.filter(school=theirs.school).count() == before
    assert all(type(row).objects.filter(pk=row.pk).exists() for row in theirs.rows.values())
