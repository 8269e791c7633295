"""Quality values of the ``Accept`` family of headers (RFC 9110 §12.4.2), read once for all.

``Accept`` picks the media type (``fhirflow.http``) and whether a browser gets the page
(``fhirflow.webpage``); ``Accept-Encoding`` picks gzip (``fhirflow.compression``). Each reads the
same list of ``value;q=weight`` items, and a weight that is not a number counts as 0 (refused).
"""

from __future__ import annotations


def weighted(header: str) -> list[tuple[str, float]]:
    """The header's values, lower-cased and in the order given, each with its weight (1 when no
    ``q`` parameter); empty items are left out."""
    found: list[tuple[str, float]] = []
    for item in header.split(","):
        value, _, params = item.partition(";")
        value = value.strip().lower()
        if not value:
            continue
        weight = 1.0
        for param in params.split(";"):
            name, _, number = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(number)
                except ValueError:
                    weight = 0.0
        found.append((value, weight))
    return found
