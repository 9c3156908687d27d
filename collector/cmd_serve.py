"""``wildedge collect serve``: the read-only web page (devices, detections per day, crops, exports) under uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Annotated

import typer

from collector.common import DbOption, fail, open_db, require_extra

logger = logging.getLogger(__name__)


def serve(db: DbOption = None,
          host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 shows the page to the whole "
                                                 "network (no login: put a reverse proxy with TLS in front).")]
          = "127.0.0.1",
          port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8080) -> None:
    """Serve a read-only web page of the collector database (GET only; binds 127.0.0.1 unless --host)."""
    require_extra("web")
    import uvicorn

    from collector.web.app import create_app

    engine = open_db(db, read_only=True)
    try:
        # Bound here, not by uvicorn: it logs a bind failure over several lines and exits 3.
        sock = listen(host, port)
    except OSError as err:
        engine.dispose()
        fail(f"cannot listen on {host}:{port}: {err.strerror or err}; pick another --port or --host")
    if not _loopback(host):
        logger.warning("serving on %s: anyone who can reach this address can read the page (there is no login)",
                       host)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(create_app(engine), host=host, port=port, log_level="info", server_header=False,
                            proxy_headers=False)
    shown = f"[{host}]" if ":" in host else host
    # uvicorn does not announce a socket it was handed; the user needs the address to open.
    typer.echo(f"serving on http://{shown}:{port}/ (Ctrl+C to stop)", err=True)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        engine.dispose()


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (the first address ``host`` resolves to).

    Raises:
        OSError: the name does not resolve, or the address is in use or not this machine's.
    """
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart while old connections linger
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
