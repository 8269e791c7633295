"""The page for people (issue 15, point 8; fhirflow.webpage), over real HTTP and in headless Chromium.

Content negotiation first: only a browser's navigation to the base URL gets HTML; FHIR clients
get what they always got. Then the page itself, driven by Playwright on Debian's ``chromium``
(the system browser, through ``executable_path``: nothing is downloaded): resource types with
counts, a search, a resource and its history, an export job, a subscription's status, and a
resource whose text is markup shown as text with no script run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirflow.local.launcher import LocalServer
from tests.e2e.support import FHIR_JSON
from tests.e2e.test_authz_as import AuthorizationServer
from tests.e2e.webhooks import Receiver

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
"""What Chromium sends when it navigates to a URL."""
SUBSCRIPTIONS_ENV = {
    "FHIRFLOW_SUBSCRIPTIONS_ALLOW_HTTP": "true",  # the receiver is plain HTTP on 127.0.0.1
    "FHIRFLOW_SUBSCRIPTIONS_ALLOW_PRIVATE": "true",
}
MARKUP = "<img src=x onerror=\"window.__xss = 1; document.title = 'pwned'\">"


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A server of its own, so that the counts the page shows are this test's."""
    with LocalServer(data_dir=tmp_path_factory.mktemp("webpage"), env=SUBSCRIPTIONS_ENV) as running:
        yield running


@pytest.fixture
def http(web_server: LocalServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web_server.base_url, headers={"Content-Type": FHIR_JSON}, timeout=60) as client:
        yield client


def _media_type(reply: httpx.Response) -> str:
    return reply.headers["content-type"].split(";")[0].strip()


def test_a_browser_opening_the_base_url_gets_the_page(http: httpx.Client) -> None:
    reply = http.get("/", headers={"Accept": BROWSER_ACCEPT})

    assert reply.status_code == 200
    assert _media_type(reply) == "text/html"
    assert "<title>fhirflow</title>" in reply.text
    assert "Accept" in reply.headers["vary"]
    assert reply.headers["x-content-type-options"] == "nosniff"
    policy = reply.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy
    # The policy allows exactly the page's own script and style, by hash (CSP 3 hash-source).
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        inline = re.findall(rf"<{tag}>(.*?)</{tag}>", reply.text, re.DOTALL)
        assert len(inline) == 1
        digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}'" in policy
    assert re.search(r"<script[^>]+src=|<link[^>]+href=\"(?!data:)", reply.text) is None  # nothing from elsewhere


def test_a_tenants_base_url_gets_the_page_too(http: httpx.Client) -> None:
    reply = http.get("/tenant/acme", headers={"Accept": "text/html"})

    assert reply.status_code == 200
    assert _media_type(reply) == "text/html"


@pytest.mark.parametrize(
    ("accept", "params"),
    [
        ("application/fhir+json", {}),
        ("application/json", {}),
        ("*/*", {}),
        (None, {}),
        ("text/html;q=0.1, application/json;q=0.8", {}),
        ("text/html, application/fhir+json", {}),  # a tie goes to FHIR
        (BROWSER_ACCEPT, {"_format": "json"}),  # _format overrides Accept (http.html#mime-type)
        (BROWSER_ACCEPT, {"_count": "1"}),  # a search of the base URL is a search
    ],
)
def test_fhir_clients_keep_getting_fhir(http: httpx.Client, accept: str | None, params: dict[str, str]) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    if accept is None:
        http.headers.pop("accept", None)

    reply = http.get("/", headers=headers, params=params)

    assert reply.status_code == 200, reply.text
    assert _media_type(reply) in (FHIR_JSON, "application/json")
    assert reply.json()["resourceType"] == "Bundle"
    assert "content-security-policy" not in reply.headers
    if not params:  # the same URL is the page for a browser: caches must tell the two apart
        assert "Accept" in [f.strip() for f in reply.headers["vary"].split(",")]


@pytest.mark.parametrize(
    ("path", "depth"),
    [
        ("/Patient", 1),
        ("/Patient?family=x", 1),
        ("/Patient/_history", 2),
        ("/Patient/{id}", 2),
        ("/Patient/{id}/_history", 3),
        ("/Patient/{id}/_history/1", 4),
        ("/tenant/acme/Patient/{id}", 2),
    ],
)
def test_a_browser_opening_a_fhir_url_gets_the_page_for_it(http: httpx.Client, path: str, depth: int) -> None:
    created = http.post("/Patient", json={"resourceType": "Patient"}).json()

    reply = http.get(path.replace("{id}", created["id"]), headers={"Accept": BROWSER_ACCEPT})

    assert reply.status_code == 200
    assert _media_type(reply) == "text/html"
    # The page finds the FHIR base from its own URL with this number (and from nothing else the request said).
    assert f'<meta name="fhirflow-depth" content="{depth}" data-depth>' in reply.text
    assert "content-security-policy" in reply.headers


def test_binaries_and_operations_keep_their_own_answers(http: httpx.Client) -> None:
    created = http.post("/Patient", json={"resourceType": "Patient"}).json()
    binary = http.post("/Binary", content=b"plain words", headers={"Content-Type": "text/plain"})
    assert binary.status_code == 201, binary.text

    meta = http.get(f"/Patient/{created['id']}/$meta", headers={"Accept": "text/html"})
    raw = http.get(binary.headers["Location"].split("/_history")[0], headers={"Accept": BROWSER_ACCEPT})
    as_json = http.get(f"/Patient/{created['id']}", headers={"Accept": BROWSER_ACCEPT}, params={"_format": "json"})

    assert meta.status_code == 406
    assert "fhirflow-depth" not in raw.text
    assert as_json.json() == created
    assert "Accept" in as_json.headers["vary"]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian's chromium is not installed (make test installs it with apt-get)")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="the dev extra installs playwright")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def _seed(http: httpx.Client, receiver: Receiver) -> dict[str, Any]:
    patients = [
        http.post("/Patient", json={"resourceType": "Patient", "name": [{"family": f"Webpage{n}", "given": ["Ada"]}]})
        for n in range(3)
    ]
    assert all(p.status_code == 201 for p in patients)
    first = patients[0].json()
    updated = http.put(f"/Patient/{first['id']}", json={**first, "gender": "female"})
    assert updated.status_code == 200, updated.text
    markup = http.post("/Patient", json={"resourceType": "Patient", "name": [{"family": MARKUP}]})
    assert markup.status_code == 201, markup.text
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "heart rate"},
        "subject": {"reference": f"Patient/{first['id']}"},
    }
    assert http.post("/Observation", json=observation).status_code == 201
    subscription = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "webpage",
        "criteria": "Observation?code=webpage-never",
        "channel": {"type": "rest-hook", "endpoint": receiver.url},
    }
    created = http.post("/Subscription", json=subscription)
    assert created.status_code == 201, created.text
    sub_id = created.json()["id"]
    deadline = time.monotonic() + 20
    while http.get(f"/Subscription/{sub_id}").json()["status"] != "active":
        assert time.monotonic() < deadline, "the subscription never became active"
        time.sleep(0.05)
    return {"patient": first, "markup": markup.json(), "subscription": sub_id}


def test_the_page_in_a_browser(http: httpx.Client, web_server: LocalServer, browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with Receiver() as receiver:
        seeded = _seed(http, receiver)
        patient_count = http.get("/Patient", params={"_summary": "count"}).json()["total"]
        problems: list[str] = []
        context = browser.new_context()
        page = context.new_page()
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("dialog", lambda dialog: problems.append(f"dialog {dialog.message}"))

        reply = page.goto(web_server.base_url + "/")
        assert reply is not None
        assert reply.header_value("content-type").startswith("text/html")

        # Resource types with counts, as the API counts them.
        page.wait_for_selector("#types[data-loaded=true]", timeout=60_000)
        assert page.text_content("#types tr[data-type=Patient] td:nth-child(2)") == str(patient_count)
        assert page.text_content("#types tr[data-type=Observation] td:nth-child(2)") == "1"
        assert page.is_hidden("#types tr[data-type=Account]")  # empty types are hidden by default

        # A search: type and query string.
        page.select_option("#search-type", "Patient")
        page.fill("#search-query", "family=Webpage&_sort=family")
        page.click("#search-go")
        # Playwright's expect, not wait_for_function: its polling evaluates strings, which the page's CSP forbids.
        expect(page.locator("#results tbody tr")).to_have_count(3)
        summaries = page.locator("#results tbody tr td:nth-child(3)").all_text_contents()
        assert summaries == ["Ada Webpage0", "Ada Webpage1", "Ada Webpage2"]
        assert page.text_content("#search-summary").startswith("3 found")

        # A FHIR URL opened in the browser: the page runs that search.
        page.goto(f"{web_server.base_url}/Patient?family=Webpage&_sort=-family")
        expect(page.locator("#results tbody tr")).to_have_count(3)
        assert page.locator("#results tbody tr td:nth-child(3)").all_text_contents()[0] == "Ada Webpage2"
        assert page.input_value("#search-query") == "family=Webpage&_sort=-family"

        # A resource and its history.
        page.click(f"#results button:text-is('Patient/{seeded['patient']['id']}')")
        page.wait_for_selector(f"#history[data-loaded='Patient/{seeded['patient']['id']}']")
        shown = page.text_content("#resource-json")
        assert '"gender": "female"' in shown
        assert page.locator("#history tbody tr").count() == 2
        page.click("#history tbody tr:has(td:text-is('1')) button")
        # The version is fetched after the click: wait for it (a plain read right away raced the fetch).
        expect(page.locator("#resource-json")).to_contain_text('"versionId": "1"')
        assert '"gender"' not in page.text_content("#resource-json")

        # The same resource opened by its URL, and a version by its vread URL.
        page.goto(f"{web_server.base_url}/Patient/{seeded['patient']['id']}")
        page.wait_for_selector(f"#history[data-loaded='Patient/{seeded['patient']['id']}']")
        assert '"gender": "female"' in page.text_content("#resource-json")
        page.goto(f"{web_server.base_url}/Patient/{seeded['patient']['id']}/_history/1")
        page.wait_for_selector(f"#history[data-loaded='Patient/{seeded['patient']['id']}']")
        assert '"versionId": "1"' in page.text_content("#resource-json")
        page.goto(web_server.base_url + "/")
        page.select_option("#search-type", "Patient")

        # A resource whose text is markup: shown as text, nothing run.
        page.fill("#search-query", f"_id={seeded['markup']['id']}")
        page.click("#search-go")
        expect(page.locator("#results tbody tr")).to_have_count(1)
        expect(page.locator("#results tbody tr td:nth-child(3)")).to_have_text(MARKUP)
        assert page.locator("#results tbody tr td:nth-child(3)").text_content() == MARKUP
        page.click(f"#results button:text-is('Patient/{seeded['markup']['id']}')")
        page.wait_for_selector(f"#history[data-loaded='Patient/{seeded['markup']['id']}']")
        assert 'onerror=\\"window.__xss' in page.text_content("#resource-json")
        assert page.locator("img").count() == 0
        assert page.evaluate("window.__xss") is None
        assert page.title() == "fhirflow"

        # An export job started from the page, followed to its end.
        page.click("#export-start")
        deadline = time.monotonic() + 60
        while "complete" not in (page.get_attribute("#exports tbody tr", "data-status") or ""):
            assert time.monotonic() < deadline, page.text_content("#exports")
            time.sleep(0.3)
            page.click("#exports-refresh")
            page.wait_for_selector("#exports[data-loaded=true] tbody tr")
        files = page.text_content("#exports tbody tr td:nth-child(3)")
        assert f"Patient: {patient_count}" in files
        assert "Observation: 1" in files

        # The subscription's status, as $status tells it.
        page.wait_for_selector("#subscriptions[data-loaded=true]")
        reference = f"Subscription/{seeded['subscription']}"
        status_row = page.locator(f"#subscriptions tbody tr:has(button:text-is('{reference}'))")
        assert status_row.locator("td:nth-child(2)").text_content() == "active"

        screenshot = Path(os.environ.get("FHIRFLOW_WEBPAGE_SCREENSHOT", tmp_path / "webpage.png"))
        page.screenshot(path=str(screenshot), full_page=True)
        assert problems == []
        context.close()


def test_with_smart_on_the_page_shows_what_the_token_may_read(
    browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The page holds no data and is served to anyone; what it shows comes from the API with the
    token pasted into it, so a patient-scoped token sees that patient only."""
    from playwright.sync_api import expect

    with AuthorizationServer() as idp:
        realm = idp.realm("web")
        env = {"FHIRFLOW_AUTH_CONFIG": json.dumps({"issuers": [idp.issuer_config("web")]})}
        data_dir = tmp_path_factory.mktemp("webpage-smart")
        with (
            LocalServer(data_dir=data_dir, extra_args=("--auth", "smart"), env=env) as server,
            httpx.Client(base_url=server.base_url, timeout=60) as api,
        ):
            admin = {"Authorization": f"Bearer {realm.mint('system/*.cruds')}"}
            for id_ in ("me", "someone-else"):
                body = {"resourceType": "Patient", "id": id_, "name": [{"family": id_}]}
                assert api.put(f"/Patient/{id_}", json=body, headers=admin).status_code == 201
            context = browser.new_context()
            page = context.new_page()
            page.goto(server.base_url + "/")
            page.wait_for_selector("#types[data-loaded=true]", timeout=60_000)
            assert page.text_content("#types tr[data-type=Patient] td:nth-child(2)") == "(401)"

            page.fill("#token", realm.mint("patient/*.rs", patient="me"))
            page.locator("#token").blur()  # the change event: the page loads again with the token
            page.wait_for_selector("#types[data-loaded=true]", timeout=60_000)
            expect(page.locator("#types tr[data-type=Patient] td:nth-child(2)")).to_have_text("1")
            page.select_option("#search-type", "Patient")
            page.fill("#search-query", "")
            page.click("#search-go")
            expect(page.locator("#results tbody tr")).to_have_count(1)
            assert page.locator("#results tbody tr td:nth-child(3)").text_content() == "me"

            # Export jobs are their owner's (issue 14): one started with Alice's token shows its
            # status to her, and to Bob's token (same browser) exactly what an unknown job shows.
            def use_token(token: str) -> None:
                page.fill("#token", token)
                page.locator("#token").blur()
                page.wait_for_selector("#types[data-loaded=true]", timeout=60_000)

            use_token(realm.mint("system/*.rs", sub="alice", client_id="app-1"))
            page.click("#export-start")
            row = page.locator("#exports tbody tr")
            expect(row).to_have_count(1)
            expect(row).to_have_attribute("data-status", re.compile("^(in progress|complete)"))
            use_token(realm.mint("system/*.rs", sub="bob", client_id="app-1"))
            page.click("#exports-refresh")
            expect(row).to_have_attribute("data-status", re.compile("^status: HTTP 404"))
            context.close()
