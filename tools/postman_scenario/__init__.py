"""The scenario tools/gen_postman.py turns into the Postman collection: folders of steps, in run order."""

from __future__ import annotations

from collections.abc import Callable

from postman_scenario.jobs import binary, bundles, cleanup, export, reindex, subscriptions
from postman_scenario.resources import capabilities, crud, history, search
from postman_scenario.steps import Step

FOLDERS: tuple[tuple[str, Callable[[], list[Step]]], ...] = (
    ("Capabilities", capabilities),
    ("CRUD and operations", crud),
    ("Search", search),
    ("History", history),
    ("Batch and transaction", bundles),
    ("Bulk export", export),
    ("Reindex", reindex),
    ("Binary", binary),
    ("Subscriptions", subscriptions),
    ("Cleanup", cleanup),
)
