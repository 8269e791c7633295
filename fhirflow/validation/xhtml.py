"""``Narrative.div``: the XHTML subset of R4 (narrative.html#Narrative, invariants txt-1 and txt-2).

A narrative is shown to people, often by a browser inside a clinical application, so a script in
one is stored cross-site scripting. The rules are the spec's, read as an allow-list:

- the value is one well-formed XML element, ``div`` in the XHTML namespace
  (``http://www.w3.org/1999/xhtml``), with balanced tags and no DOCTYPE (so no entity of ours to
  expand), processing instruction or CDATA section (an HTML parser reads one differently);
- every element is in that namespace and is one of txt-1's list (the basic formatting elements of
  HTML 4.0 chapters 7-11 and 15, ``a`` and ``img``): no ``script``, ``iframe``, ``object``,
  ``base``, ``meta``, ``form``, ``link``, ``style`` element, frames and so on;
- every attribute is one of txt-1's list (so no ``on*`` event handler), and is in no namespace
  (no ``xlink:href``);
- a link (``href``, ``src``, ``cite``, ``longdesc``) is relative or uses ``http``, ``https``,
  ``mailto``, ``tel``, ``ftp`` or ``urn``; an image may also be a ``data:image/`` URL other than
  SVG (which can hold a script); the XHTML content SHALL NOT contain scripts, whichever way;
- a ``style`` attribute (the "internally contained style attributes" txt-1 allows) holds no
  script either: no ``expression(``, ``javascript:``, ``behavior``, ``-moz-binding``, ``@import``
  and no CSS escape that could spell them;
- txt-2: some non-whitespace text, or an image with a ``src``.
"""

from __future__ import annotations

import re
from typing import Final
from xml.parsers import expat

XHTML_NS: Final = "http://www.w3.org/1999/xhtml"

# txt-1's XPath (StructureDefinition-Narrative, R4), as published.
ELEMENTS: Final = frozenset(
    [
        "a",
        "abbr",
        "acronym",
        "b",
        "big",
        "blockquote",
        "br",
        "caption",
        "cite",
        "code",
        "col",
        "colgroup",
        "dd",
        "dfn",
        "div",
        "dl",
        "dt",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "img",
        "li",
        "ol",
        "p",
        "pre",
        "q",
        "samp",
        "small",
        "span",
        "strong",
        "sub",
        "sup",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "tt",
        "ul",
        "var",
    ]
)
ATTRIBUTES: Final = frozenset(
    [
        "abbr",
        "accesskey",
        "align",
        "alt",
        "axis",
        "bgcolor",
        "border",
        "cellhalign",
        "cellpadding",
        "cellspacing",
        "cellvalign",
        "char",
        "charoff",
        "charset",
        "cite",
        "class",
        "colspan",
        "compact",
        "coords",
        "dir",
        "frame",
        "headers",
        "height",
        "href",
        "hreflang",
        "hspace",
        "id",
        "lang",
        "longdesc",
        "name",
        "nowrap",
        "rel",
        "rev",
        "rowspan",
        "rules",
        "scope",
        "shape",
        "span",
        "src",
        "start",
        "style",
        "summary",
        "tabindex",
        "title",
        "type",
        "valign",
        "value",
        "vspace",
        "width",
    ]
)
URL_ATTRIBUTES: Final = frozenset(("href", "src", "cite", "longdesc"))
SCHEMES: Final = frozenset(("http", "https", "mailto", "tel", "ftp", "urn"))
_DATA_IMAGE: Final = re.compile(r"data:image/(?:png|gif|jpeg|jpg|bmp|webp)[;,]", re.IGNORECASE)
_SCHEME: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# Browsers drop ASCII tabs and newlines anywhere in a URL, and leading controls and spaces.
_URL_IGNORED: Final = re.compile(r"[\x00-\x20\x7f]")
_CSS_COMMENT: Final = re.compile(r"/\*.*?(?:\*/|$)", re.DOTALL)
_STYLE_FORBIDDEN: Final = ("expression", "javascript:", "vbscript:", "behavior", "-moz-binding", "@import", "\\")


class NarrativeError(ValueError):
    """Why a ``div`` breaks the rules, in words for an OperationOutcome."""


def check_div(value: str) -> None:
    """Raise :class:`NarrativeError` unless ``value`` is a narrative div by txt-1 and txt-2."""
    checker = _Checker()
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartDoctypeDeclHandler = checker.doctype
    parser.ProcessingInstructionHandler = checker.instruction
    parser.StartCdataSectionHandler = checker.cdata
    parser.StartElementHandler = checker.start
    parser.CharacterDataHandler = checker.text
    try:
        parser.Parse(value, True)
    except expat.ExpatError as exc:
        reason = expat.ErrorString(exc.code)
        raise NarrativeError(
            f"The narrative is not well-formed XHTML ({reason}, line {exc.lineno}, column {exc.offset})"
        ) from None
    if not checker.has_content:
        raise NarrativeError("The narrative has no text and no image (txt-2: it SHALL have non-whitespace content)")


class _Checker:
    def __init__(self) -> None:
        self.depth = 0
        self.has_content = False

    def doctype(self, *_: object) -> None:
        raise NarrativeError("A narrative cannot have a DOCTYPE")

    def instruction(self, target: str, _data: str) -> None:
        raise NarrativeError(f"A narrative cannot have a processing instruction (<?{target[:20]}?>)")

    def cdata(self) -> None:
        # An HTML parser (innerHTML) reads "<![CDATA[" as a comment that ends at the first ">", so
        # markup that XML sees as text inside the section would be live HTML there.
        raise NarrativeError("A narrative cannot have a CDATA section: write its text with &lt; and &amp;")

    def text(self, data: str) -> None:
        if not self.has_content and data.strip():
            self.has_content = True

    def start(self, name: str, attributes: dict[str, str]) -> None:
        namespace, _, local = name.rpartition(" ")
        if self.depth == 0 and (local != "div" or namespace != XHTML_NS):
            where = f"in the namespace '{namespace[:60]}'" if namespace else "in no namespace"
            raise NarrativeError(
                f'A narrative is one <div> in the XHTML namespace (xmlns="{XHTML_NS}"), not <{local[:40]}> {where}'
            )
        self.depth += 1
        if namespace != XHTML_NS:
            raise NarrativeError(f"<{local[:40]}> is not in the XHTML namespace ({XHTML_NS})")
        if local not in ELEMENTS:
            raise NarrativeError(f"<{local[:40]}> is not allowed in a narrative (txt-1: basic HTML formatting only)")
        for key, raw in attributes.items():
            _check_attribute(local, key, raw)
        if local == "img" and attributes.get("src"):
            self.has_content = True


def _check_attribute(element: str, key: str, value: str) -> None:
    if " " in key:
        shown = key.rpartition(" ")[2][:40]
        raise NarrativeError(f"The attribute '{shown}' of <{element}> is in a namespace; a narrative allows none")
    if key.lower().startswith("on"):
        raise NarrativeError(f"The event attribute '{key[:40]}' of <{element}> is not allowed (txt-1: no scripts)")
    if key not in ATTRIBUTES:
        raise NarrativeError(f"The attribute '{key[:40]}' of <{element}> is not allowed in a narrative (txt-1)")
    if key in URL_ATTRIBUTES:
        _check_url(element, key, value)
    elif key == "style":
        squeezed = _CSS_COMMENT.sub("", "".join(value.split()).lower())  # "exp/**/ression" is "expression"
        for word in _STYLE_FORBIDDEN:
            if word in squeezed:
                raise NarrativeError(f"The style of <{element}> holds '{word}', which can run a script")


def _check_url(element: str, key: str, value: str) -> None:
    url = _URL_IGNORED.sub("", value)
    scheme = _SCHEME.match(url)
    if scheme is None or scheme.group(1).lower() in SCHEMES:
        return  # relative, a fragment, or an allowed scheme
    if key == "src" and element == "img" and _DATA_IMAGE.match(url):
        return
    raise NarrativeError(
        f"The {key} of <{element}> uses the scheme '{scheme.group(1)[:20]}:', which a narrative cannot use"
    )
