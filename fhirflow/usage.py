"""The command line's own error: what a user can fix (a wrong path, a file that is not FHIR, no
server at the URL), printed by ``fhirflow`` as one line on stderr with exit status 2, no traceback."""

from __future__ import annotations


class UsageError(Exception):
    """A mistake in a command's input or environment, stated in words the user can act on."""
