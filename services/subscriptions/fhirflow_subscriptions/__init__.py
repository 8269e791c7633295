"""The subscriptions service: REST-hook notifications of committed changes (DESIGN.md §3).

FHIR R4 Subscriptions (criteria = a search) and topic-based subscriptions per the R5 Backport IG
1.1.0 for R4. Changes (``ResourceChanged`` events) are matched against the active subscriptions of
their tenant, and each notification is delivered from a durable queue, in order per subscription,
signed with the Standard Webhooks scheme. See docs/subscriptions.md for the design.
"""
