"""fhirflow benchmarks: ``python -m bench`` (``make bench``) runs them and prints one table.

Speed goals live here, never as timed assertions in the tests.
"""
