"""Error pages in the portal's layout: navigation, a way back, the same look for 404/403/500."""

from __future__ import annotations

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse

from portal.views import server_error
from tests.factories import UserFactory
from tests.integration.test_web_pages import client_for

pytestmark = pytest.mark.django_db


def test_a_missing_page_is_a_styled_404_with_navigation() -> None:
    sales = UserFactory(roles=["requesters"])
    response = client_for(sales).get("/no/such/page/")
    assert response.status_code == 404
    page = response.content.decode()
    assert '<nav aria-label="Main">' in page and "portal.css" in page
    assert "Page not found" in page and "Error 404" in page
    assert f'href="{reverse("request-pick")}"' in page  # the requester's way on
    assert f'href="{reverse("dashboard")}"' in page


def test_a_missing_account_is_the_same_404() -> None:
    response = client_for(UserFactory(roles=["requesters"])).get("/accounts/999999/")
    assert response.status_code == 404 and "Page not found" in response.content.decode()


def test_a_forbidden_page_is_a_styled_403_saying_why() -> None:
    response = client_for(UserFactory(roles=["requesters"])).get(reverse("approvals"))
    assert response.status_code == 403
    page = response.content.decode()
    assert "Not allowed" in page and "only approvers decide requests and plans" in page
    assert '<nav aria-label="Main">' in page


def test_a_form_without_its_csrf_token_gets_the_403_page() -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(UserFactory(roles=["requesters"]))
    response = client.post(reverse("logout"))
    assert response.status_code == 403
    page = response.content.decode()
    assert "reload the page and try again" in page and "portal.css" in page


def test_the_500_page_has_the_layout_and_a_way_back() -> None:
    request = RequestFactory().get("/accounts/")
    response = server_error(request)
    assert response.status_code == 500
    page = response.content.decode()
    assert "Something went wrong" in page and "portal.css" in page
    assert f'href="{reverse("dashboard")}"' in page


def test_api_paths_answer_json() -> None:
    response = client_for(UserFactory(roles=["requesters"])).get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
