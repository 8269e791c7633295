"""In-process tests build their embedded stores as the embedded runner does: with read-your-writes
registered (:func:`fhirflow.local.worker.install_read_your_writes`), as the embedded gateway does
in ``fhirflow serve`` and ``fhirflow import``; the kernel itself does not know the worker loop."""

from fhirflow.local.worker import install_read_your_writes

install_read_your_writes()
