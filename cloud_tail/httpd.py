"""A tiny read-only HTTP server in a daemon thread: fixed paths, each answered by a function.

Used by ``--metrics-port`` (:mod:`cloud_tail.metrics`) and ``splitedge fleet --web-port``
(:mod:`cloud_tail.fleet_web`). The stdlib ``http.server`` only: nothing to install, GET and HEAD,
no files served from disk, access logs silenced. A route that raises answers 500 with the error's
line; the server thread never dies of it.
"""

from __future__ import annotations

import argparse
import errno
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sdk.errors import ListenError

__all__ = ["Route", "add_http_arguments", "port_number", "serve"]

log = logging.getLogger(__name__)

#: a route returns the body and its Content-Type.
Route = Callable[[], tuple[bytes, str]]


def serve(routes: Mapping[str, Route], port: int, *, host: str = "127.0.0.1", flag: str = "--port") -> ThreadingHTTPServer:
    """Serve ``routes`` (path -> function) on ``host:port`` in a daemon thread; port 0 picks a free one.

    ``.server_port`` is the bound port; stop with ``.shutdown()`` then ``.server_close()``. Raises
    :class:`ListenError` (naming ``flag``) when the address cannot be bound.
    """
    paths = dict(routes)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, with_body: bool) -> None:
            route = paths.get(self.path.split("?", 1)[0])
            if route is None:
                self.send_error(404, f"no page here; try {' or '.join(sorted(paths))}")
                return
            try:
                body, ctype = route()
            except Exception as exc:  # noqa: BLE001 - one bad scrape must not kill the server thread
                log.exception("HTTP route %s failed", self.path)
                self.send_error(500, f"{type(exc).__name__}: {exc}"[:200])
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._answer(True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(False)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence access logs
            pass

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        why = "the port is in use by another process" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise ListenError(
            f"{flag} {port} on {host}: cannot listen ({why}); pick another port, or 0 for a free one"
        ) from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"http-{server.server_port}", daemon=True).start()
    return server


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 meaning "pick a free one"."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number; expected 0..65535 (0: pick a free port)") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number; expected 0..65535 (0: pick a free port)")
    return value


def add_http_arguments(parser: argparse.ArgumentParser, name: str, what: str) -> None:
    """``--NAME-port P`` (off unless given; 0: a free port, printed) and ``--NAME-addr A`` (default 127.0.0.1)."""
    parser.add_argument(f"--{name}-port", type=port_number, default=None, metavar="P",
                        help=f"{what} on port P (0: a free one; off unless given)")  # fmt: skip
    parser.add_argument(f"--{name}-addr", default="127.0.0.1", metavar="A",
                        help=f"address for --{name}-port (default %(default)s; 0.0.0.0: every interface)")  # fmt: skip
