"""Stored cross-site scripting (issue 14, defect 4): a narrative is the R4 XHTML subset
(narrative.html, txt-1 and txt-2) on every write path, and a Binary served in its own
content type cannot run as a page of the server's origin."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from tests.e2e.support import FHIR_JSON, JSON_PATCH, assert_outcome, create, patient, read, unique

NS = 'xmlns="http://www.w3.org/1999/xhtml"'

ATTACKS = {
    "script": f"<div {NS}><p>hi</p><script>alert(1)</script></div>",
    "script-in-svg": f'<div {NS}>x<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg></div>',
    "onerror": f'<div {NS}><img src="x.png" onerror="alert(1)"/></div>',
    "onclick-upper": f'<div {NS}><p ONCLICK="alert(1)">hi</p></div>',
    "javascript-href": f'<div {NS}><a href="javascript:alert(1)">hi</a></div>',
    "javascript-href-obfuscated": f'<div {NS}><a href=" jav&#x09;ascript:alert(1)">hi</a></div>',
    "vbscript-href": f'<div {NS}><a href="VBScript:msgbox(1)">hi</a></div>',
    "data-html-href": f'<div {NS}><a href="data:text/html;base64,PHNjcmlwdD4=">hi</a></div>',
    "svg-data-img": f'<div {NS}><img src="data:image/svg+xml;base64,PHN2Zz4="/></div>',
    "iframe": f'<div {NS}>x<iframe src="https://evil.example"/></div>',
    "object": f'<div {NS}>x<object data="x.swf"/></div>',
    "embed": f'<div {NS}>x<embed src="x.swf"/></div>',
    "base": f'<div {NS}>x<base href="https://evil.example/"/></div>',
    "meta-refresh": f'<div {NS}>x<meta http-equiv="refresh" content="0;url=https://evil.example"/></div>',
    "form": f'<div {NS}><form action="https://evil.example"><p>x</p></form></div>',
    "link": f'<div {NS}>x<link rel="stylesheet" href="https://evil.example/x.css"/></div>',
    "style-element": f"<div {NS}>x<style>body {{ background: red }}</style></div>",
    "style-expression": f'<div {NS}><p style="width: expression(alert(1))">x</p></div>',
    "style-comment": f'<div {NS}><p style="width: exp/**/ression(alert(1))">x</p></div>',
    "style-escape": f'<div {NS}><p style="background: url(\\6a avascript:alert(1))">x</p></div>',
    "xlink": f'<div {NS} xmlns:x="http://www.w3.org/1999/xlink"><a x:href="javascript:alert(1)">hi</a></div>',
    "unbalanced": f"<div {NS}><p>hi</div>",
    "unclosed": f"<div {NS}><p>hi</p>",
    "two-roots": f"<div {NS}>a</div><div {NS}>b</div>",
    "no-namespace": "<div><p>hi</p></div>",
    "other-namespace": '<div xmlns="http://example.org/html">hi</div>',
    "not-a-div": f"<p {NS}>hi</p>",
    "html-text": "<script>alert(1)</script>",
    "plain-text": "hello",
    "doctype": f'<!DOCTYPE div [<!ENTITY x "y">]><div {NS}>&x;</div>',
    "processing-instruction": f'<?xml-stylesheet href="x.xsl"?><div {NS}>x</div>',
    "cdata": f"<div {NS}><![CDATA[ ><img src=x onerror=alert(1)> ]]></div>",  # live HTML to innerHTML
    "empty": f"<div {NS}>  </div>",  # txt-2
    "html-entity": f"<div {NS}>a&nbsp;b</div>",  # not XML: XHTML here has only XML's five entities
}

SAFE = [
    f"<div {NS}>Plain text</div>",
    f'<div {NS}><table class="grid"><tbody><tr><td colspan="2" style="color: red">1 &lt; 2 &amp; 3</td></tr>'
    "</tbody></table></div>",
    f'<div {NS}><a href="https://example.org/x?a=1&amp;b=2">link</a> <a href="#top">top</a>'
    ' <a href="Patient/1">rel</a> <a href="mailto:a@b.example">mail</a></div>',
    f'<div {NS}><img src="data:image/png;base64,iVBORw0KGgo=" alt="dot"/></div>',
    f"<div {NS}><h1>Title</h1><ul><li>one</li></ul><pre>  x  </pre><br/><hr/></div>",
]


def _with_div(div: str, **fields: Any) -> dict[str, Any]:
    return patient(text={"status": "generated", "div": div}, **fields)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_create_and_update_refuse_an_unsafe_narrative(client: httpx.Client, name: str) -> None:
    div = ATTACKS[name]
    family = unique("Xss")
    id_ = unique("xss")

    assert_outcome(
        client.post("/Patient", json=_with_div(div, name=[{"family": family}])), 400, expression="Patient.text.div"
    )
    assert_outcome(client.put(f"/Patient/{id_}", json=_with_div(div, id=id_)), 400, expression="Patient.text.div")

    assert_outcome(read(client, "Patient", id_), 404)
    assert client.get("/Patient", params={"family": family}).json().get("total") == 0


@pytest.mark.parametrize("name", ["script", "onerror", "javascript-href", "iframe", "no-namespace", "unbalanced"])
def test_contained_resources_and_bundles_refuse_an_unsafe_narrative(client: httpx.Client, name: str) -> None:
    div = ATTACKS[name]
    family = unique("Xss")
    contained = patient(
        name=[{"family": family}],
        contained=[{"resourceType": "Organization", "id": "o", "text": {"status": "generated", "div": div}}],
    )

    assert_outcome(client.post("/Patient", json=contained), 400, expression="Patient.contained[0].text.div")
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(name=[{"family": family}]), "request": {"method": "POST", "url": "Patient"}},
            {"resource": _with_div(div, name=[{"family": family}]), "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    refused = assert_outcome(client.post("/", json=transaction), 400)
    assert any("text.div" in e for i in refused["issue"] for e in i.get("expression", [])), refused
    batch = {**transaction, "type": "batch"}
    answered = client.post("/", json=batch)
    assert answered.status_code == 200, answered.text
    statuses = [e["response"]["status"] for e in answered.json()["entry"]]
    assert statuses[0].startswith("201"), statuses
    assert statuses[1].startswith("400"), statuses
    outcome = answered.json()["entry"][1]["response"]["outcome"]
    assert any(e.endswith("text.div") for i in outcome["issue"] for e in i.get("expression", [])), outcome

    # Only the batch's good entry was stored.
    assert client.get("/Patient", params={"family": family}).json().get("total") == 1


@pytest.mark.parametrize("name", ["script", "onclick-upper", "javascript-href-obfuscated", "base", "two-roots"])
def test_patch_refuses_an_unsafe_narrative(client: httpx.Client, name: str) -> None:
    div = ATTACKS[name]
    stored = create(client, _with_div(SAFE[0], gender="male"))
    url = f"/Patient/{stored['id']}"
    json_patch = [{"op": "replace", "path": "/text/div", "value": div}]
    fhirpath_patch = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "replace"},
                    {"name": "path", "valueString": "Patient.text.div"},
                    {"name": "value", "valueString": div},
                ],
            }
        ],
    }

    reply = client.patch(url, content=json.dumps(json_patch).encode(), headers={"Content-Type": JSON_PATCH})
    assert_outcome(reply, (400, 422), expression="Patient.text.div")
    reply = client.patch(url, json=fhirpath_patch)
    assert_outcome(reply, (400, 422))

    assert read(client, "Patient", stored["id"]).json() == stored


@pytest.mark.parametrize("div", SAFE)
def test_a_safe_narrative_is_stored_as_sent(client: httpx.Client, div: str) -> None:
    stored = create(client, _with_div(div))

    assert read(client, "Patient", stored["id"]).json()["text"]["div"] == div


HTML = b"<html><body><script>alert(document.cookie)</script></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("text/html", HTML),
        ("text/html; charset=utf-8", HTML),
        ("image/svg+xml", SVG),
        ("application/xml", b"<x/>"),
        ("text/xml", b"<x/>"),
        ("application/xhtml+xml", HTML),
        ("text/javascript", b"alert(1)"),
        ("application/javascript", b"alert(1)"),
    ],
)
def test_an_active_binary_is_a_sandboxed_download(client: httpx.Client, content_type: str, content: bytes) -> None:
    stored = create(
        client, {"resourceType": "Binary", "contentType": content_type, "data": base64.b64encode(content).decode()}
    )

    for url in (f"/Binary/{stored['id']}", f"/Binary/{stored['id']}/_history/1"):
        reply = client.get(url, headers={"Accept": "*/*"})
        assert reply.status_code == 200
        assert reply.content == content
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["content-security-policy"] == "sandbox"
        assert reply.headers["content-disposition"] == "attachment"
    raw = client.post("/Binary", content=content, headers={"Content-Type": content_type})
    assert raw.status_code == 201, raw.text
    reply = client.get(raw.headers["location"].split("/_history/")[0], headers={"Accept": content_type})
    assert reply.headers["content-security-policy"] == "sandbox"
    assert reply.headers["content-disposition"] == "attachment"


def test_a_passive_binary_is_never_sniffed_and_stays_inline(client: httpx.Client) -> None:
    stored = create(
        client, {"resourceType": "Binary", "contentType": "image/png", "data": base64.b64encode(HTML).decode()}
    )

    reply = client.get(f"/Binary/{stored['id']}", headers={"Accept": "image/png"})

    assert reply.headers["content-type"] == "image/png"
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert "content-disposition" not in reply.headers
    # As FHIR JSON it is data, not a page.
    as_json = client.get(f"/Binary/{stored['id']}", headers={"Accept": FHIR_JSON})
    assert as_json.headers["content-type"].startswith(FHIR_JSON)
