"""fhirflow: a FHIR R4 server for AWS, and the shared kernel its services are built on."""

__version__ = "0.1.0"
