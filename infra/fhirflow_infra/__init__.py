"""fhirflow's AWS CDK app (DESIGN.md §7): one construct per capability, mirroring ``services/``.

- :mod:`~fhirflow_infra.packaging` — the Lambda code asset (the repo's packages, copied) and the
  dependencies layer's location (built by ``infra/build_layer.py``);
- :mod:`~fhirflow_infra.environment` — a :class:`fhirflow.settings.Settings` → a Lambda environment;
- :mod:`~fhirflow_infra.function` — ``FhirFunction``, which builds every Lambda the same way;
- :mod:`~fhirflow_infra.encryption`, :mod:`~fhirflow_infra.storage`, :mod:`~fhirflow_infra.events`,
  :mod:`~fhirflow_infra.api`, :mod:`~fhirflow_infra.index_sync`, :mod:`~fhirflow_infra.monitoring` —
  one construct per capability;
- :mod:`~fhirflow_infra.stack` — the stack that wires them together.
"""
