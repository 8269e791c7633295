"""FHIR transactions of any size on DynamoDB: the workflow, its task steps and their Lambda wrappers."""
