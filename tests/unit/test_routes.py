"""The route table's precedence (API Gateway's rule: literal segments beat path parameters) and
405 versus 404."""

from __future__ import annotations

import pytest

from fhirflow.errors import MethodNotAllowed, NotFound
from fhirflow.routes import ROUTE_TABLE, ROUTES, Route, RouteTable


@pytest.mark.parametrize(
    ("method", "path", "interaction", "params"),
    [
        ("GET", "/metadata", "capabilities", {}),
        ("GET", "/_history", "history-system", {}),
        ("POST", "/Patient", "create", {"type": "Patient"}),
        ("GET", "/Patient/_history", "history-type", {"type": "Patient"}),
        ("GET", "/Patient/123", "read", {"type": "Patient", "id": "123"}),
        ("PUT", "/Patient/123", "update", {"type": "Patient", "id": "123"}),
        ("PATCH", "/Patient/123", "patch", {"type": "Patient", "id": "123"}),
        ("DELETE", "/Patient/123", "delete", {"type": "Patient", "id": "123"}),
        ("GET", "/Patient/123/_history", "history-instance", {"type": "Patient", "id": "123"}),
        ("GET", "/Patient/123/_history/4", "vread", {"type": "Patient", "id": "123", "vid": "4"}),
        ("GET", "/Patient/123/", "read", {"type": "Patient", "id": "123"}),  # a trailing slash adds no segment
    ],
)
def test_each_interaction_is_found(method: str, path: str, interaction: str, params: dict[str, str]) -> None:
    route, bound = ROUTE_TABLE.match(method, path)

    assert route.interaction == interaction
    assert bound == params


def test_literal_history_beats_an_id_parameter() -> None:
    route, params = ROUTE_TABLE.match("GET", "/Patient/_history")

    assert route.interaction == "history-type"
    assert "id" not in params


def test_literal_metadata_beats_a_type_parameter() -> None:
    # GET /metadata is not a search on a type called "metadata".
    route, params = ROUTE_TABLE.match("GET", "/metadata")

    assert route.interaction == "capabilities"
    assert params == {}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/Patient/_history"),  # the literal route exists, so only its methods count: not a delete
        ("PUT", "/Patient/_history"),
        ("POST", "/Patient/123"),
        ("PUT", "/_history"),  # PUT [type] is a conditional update, but the literal _history wins
        ("DELETE", "/metadata"),
        ("POST", "/_history"),
        ("DELETE", "/Patient/123/_history/4"),
        ("POST", "/Patient/123/_history"),
    ],
)
def test_a_known_path_with_another_method_is_405(method: str, path: str) -> None:
    with pytest.raises(MethodNotAllowed) as caught:
        ROUTE_TABLE.match(method, path)
    assert caught.value.status == 405


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/Patient/1/2/3/4"),
        ("GET", "/Patient/1/Observation/2"),  # /Patient/1/history is a compartment search route now
        ("GET", "/Patient/1/_history/2/3"),
        ("BREW", "/a/b/c/d/e"),
    ],
)
def test_an_unknown_path_is_404(method: str, path: str) -> None:
    with pytest.raises(NotFound) as caught:
        ROUTE_TABLE.match(method, path)
    assert caught.value.status == 404


def test_precedence_does_not_depend_on_declaration_order() -> None:
    table = RouteTable(tuple(reversed(ROUTES)))

    assert table.match("GET", "/Patient/_history")[0].interaction == "history-type"
    assert table.match("GET", "/metadata")[0].interaction == "capabilities"
    with pytest.raises(MethodNotAllowed):
        table.match("DELETE", "/Patient/_history")


def test_a_literal_further_left_wins() -> None:
    left = Route("GET", "/x/{b}", "svc", "left")
    right = Route("GET", "/{a}/x", "svc", "right")
    for routes in ((left, right), (right, left)):
        route, params = RouteTable(routes).match("GET", "/x/x")
        assert route.interaction == "left"
        assert params == {"b": "x"}
    assert RouteTable((left, right)).match("GET", "/y/x")[0].interaction == "right"


def test_a_more_specific_path_hides_the_methods_of_a_less_specific_one() -> None:
    routes = (Route("GET", "/{type}/{id}", "svc", "read"), Route("POST", "/{type}/_search", "svc", "search"))

    with pytest.raises(MethodNotAllowed):
        RouteTable(routes).match("GET", "/Patient/_search")
    assert RouteTable(routes).match("GET", "/Patient/other")[0].interaction == "read"


def test_every_route_matches_its_own_pattern() -> None:
    for route in ROUTES:
        path = "/" + "/".join("Value" if s.startswith("{") else s for s in route.segments)
        matched, params = ROUTE_TABLE.match(route.method, path)
        assert matched == route
        assert set(params) == {s[1:-1] for s in route.segments if s.startswith("{")}


def test_routes_are_unique() -> None:
    keys = [(r.method, r.pattern) for r in ROUTES]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize(
    ("method", "interaction"),
    [("PUT", "conditional-update"), ("DELETE", "conditional-delete"), ("PATCH", "conditional-patch")],
)
def test_a_write_on_a_type_is_a_conditional_interaction(method: str, interaction: str) -> None:
    route, params = ROUTE_TABLE.match(method, "/Patient")
    assert (route.service, route.interaction) == ("crud", interaction)
    assert params == {"type": "Patient"}
