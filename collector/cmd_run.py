"""``wildedge collect run``: subscribe to every device's topics and store what arrives until SIGTERM."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from collector.common import DbOption, fail, open_db, require_extra
from edge.errors import CollectorError

logger = logging.getLogger(__name__)


def run(
    ctx: typer.Context,
    broker: Annotated[str, typer.Option("--broker", help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS)")],
    db: DbOption = None,
    share: Annotated[str | None, typer.Option(
        "--share", help="MQTT shared-subscription group: collectors in one group split the stream")] = None,
    client_id: Annotated[str | None, typer.Option(
        "--client-id", help="MQTT client id, stable across restarts and unique per process; "
                            "default wildedge-collector-<host>[-<group>]", show_default=False)] = None,
    prefix: Annotated[str, typer.Option("--prefix", help="the devices' topic prefix ([mqtt] prefix)")] = "wildedge",
    allow_device: Annotated[list[str] | None, typer.Option(
        "--allow-device", help="accept only these device ids (repeat the option); default: every device")] = None,
    max_payload: Annotated[int, typer.Option(
        "--max-payload", min=1024, metavar="BYTES", help="largest message accepted, in bytes")] = 1 << 20,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="CA certificate (PEM) for mqtts://")] = None,
    cert_file: Annotated[Path | None, typer.Option("--cert-file", help="client certificate (PEM)")] = None,
    key_file: Annotated[Path | None, typer.Option("--key-file", help="client key (PEM)")] = None,
    username: Annotated[str | None, typer.Option("--username", help="broker user name")] = None,
    password_file: Annotated[Path | None, typer.Option(
        "--password-file", help="file holding the broker password; default $CREDENTIALS_DIRECTORY/mqtt-password")] = None,
    session_expiry: Annotated[int, typer.Option(
        "--session-expiry", min=60, metavar="SECONDS", help="seconds the broker keeps the collector's session (and queues "
                                         "messages for it) while it is away")] = 7 * 86400,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, show_default=False,
                                           help="-v: debug detail.")] = 0,
) -> None:
    """Store every device's messages in the database, each event exactly once, until SIGTERM."""
    require_extra("db")
    from collector.consumer import BrokerOptions, Collector, default_client_id
    from edge.logsetup import configure_logging

    root = logging.getLogger()
    for handler in list(root.handlers):  # the CLI's plain handler: a service logs its own way (journald)
        if handler.get_name() != "wildedge":
            root.removeHandler(handler)
    configure_logging(verbosity=max(verbose, int(ctx.find_root().params.get("verbose") or 0)))
    options = BrokerOptions(url=broker, client_id=client_id or default_client_id(share), ca_file=ca_file,
                            cert_file=cert_file, key_file=key_file, username=username, password_file=password_file,
                            session_expiry=session_expiry)
    if share is not None and (not share or set(share) & {"/", "+", "#"}):
        fail("--share: a group name without '/', '+' or '#'")
    try:
        options.check()
    except CollectorError as err:
        fail(str(err))
    engine = open_db(db)
    try:
        collector = Collector(engine, broker=options, prefix=prefix, share=share,
                              allow=frozenset(allow_device) if allow_device else None, max_payload=max_payload)
    except CollectorError as err:
        fail(str(err))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: collector.stop())
    logger.info("collecting from %s into %s%s", broker, engine.url.render_as_string(hide_password=True),
                f" (share group {share})" if share else "")
    try:
        stats = collector.run()
    except CollectorError as err:
        fail(str(err))
    logger.info("stopped: stored %d, duplicates %d, rejected %d", stats.stored, stats.duplicates, stats.rejected)
