"""moto's S3 API behind a WSGI server that keeps connections open.

``python -m moto.server`` runs on Werkzeug's development server, which answers
every request with ``Connection: close``: each S3 call of the benchmark then
opens a new TCP connection, a cost real S3 (and MinIO) do not impose, and the
client's profile shows it (``sock_connect``, socket set-up and close). The same
moto application under waitress (a pure-Python, threaded WSGI server with
HTTP/1.1 keep-alive) answers like real S3 does in that respect.

    python -m bench.moto_keepalive --port 0

prints ``listening on http://127.0.0.1:PORT`` once it accepts connections.
Used by ``python -m bench --s3-server moto-keepalive`` when waitress is installed.
"""

from __future__ import annotations

import argparse
import socket
import sys


def main(argv: list[str] | None = None) -> int:
    """Serve moto's application until terminated."""
    import waitress
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    parser = argparse.ArgumentParser(prog="python -m bench.moto_keepalive")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    app = DomainDispatcherApplication(create_backend_app)
    # Bind first so the port is known before serving (and port 0 works).
    listener = socket.create_server((args.host, args.port), backlog=1024)
    host, port = listener.getsockname()[:2]
    server = waitress.create_server(app, sockets=[listener], threads=args.threads,
                                    connection_limit=2000, channel_timeout=60,
                                    ident="moto-keepalive")
    print(f"listening on http://{host}:{port}", flush=True)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
