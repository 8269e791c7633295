#!/usr/bin/env python3
"""``cdk synth`` / ``cdk deploy`` entry point (cdk.json); see fhirflow_infra.application for the context.

Run by the CDK CLI, the CLI passes the context and the output directory. Run directly
(``make synth``), it reads the context from cdk.json itself (the feature flags and the fhirflow
settings; ``CDK_CONTEXT_JSON`` overrides them) and writes the cloud assembly to ``infra/cdk.out``.
"""

import json
import os
from pathlib import Path

from aws_cdk import App

from fhirflow_infra.application import build

HERE = Path(__file__).resolve().parent

if "CDK_OUTDIR" in os.environ:  # the CLI
    app = App()
else:
    app = App(context=json.loads((HERE / "cdk.json").read_text())["context"], outdir=str(HERE / "cdk.out"))
build(app)
app.synth()
