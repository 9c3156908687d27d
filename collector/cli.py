"""``wildedge collect ...``: the central server (registered through the ``wildedge.commands`` entry point)."""

from __future__ import annotations

import typer

from collector import cmd_export, cmd_run, cmd_serve, cmd_status

app = typer.Typer(help="Collect every device's detections into one database; status, exports, a web page "
                       "(needs wildedge[collector]).", no_args_is_help=True)

app.command("run")(cmd_run.run)
app.command("status")(cmd_status.status)
app.command("serve")(cmd_serve.serve)
app.command("export")(cmd_export.export)
