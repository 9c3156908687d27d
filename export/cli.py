"""``wildedge export ...``: FP32/INT8 export, quantization and verification (workstation).

This module imports no torch at import time: ``wildedge --help`` must stay fast and work on a
device, and a missing ``export`` extra is reported by each command in one line.
"""

from __future__ import annotations

import typer

from export import cmd_export, cmd_quantize

app = typer.Typer(help="Export models to ONNX, quantize to INT8 and verify accuracy (needs wildedge[export]).",
                  no_args_is_help=True)

app.command("detector")(cmd_export.detector)
app.command("classifier")(cmd_export.classifier)
app.command("quantize")(cmd_quantize.quantize)
app.command("verify")(cmd_quantize.verify)
