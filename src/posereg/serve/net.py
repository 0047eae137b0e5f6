"""The listening socket of ``posereg serve``, bound before anything heavy is imported or loaded."""

from __future__ import annotations

import errno
import socket

__all__ = ["listen"]


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening, to hand to uvicorn.

    ``posereg serve`` binds it before loading the model, so that a port out of range or in use
    is one clear error at once, not a traceback after the model has loaded.

    Raises:
        ValueError: ``port`` outside 0-65535, or the address cannot be listened on (in use,
            not an address of this machine, a host name that does not resolve).
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port} is out of range: a TCP port is 0-65535 (0: any free port)")
    where = f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as e:
        why = getattr(e, "strerror", None) or e
        raise ValueError(
            f"cannot listen on {where}: --host {host!r} does not resolve ({why})"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ValueError(
                f"cannot listen on {where}: the port is already in use (another server is "
                "running there; stop it or choose another --port)"
            ) from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise ValueError(
                f"cannot listen on {where}: {host} is not an address of this machine "
                "(--host 127.0.0.1: this machine only; 0.0.0.0: every interface)"
            ) from None
        raise ValueError(f"cannot listen on {where}: {e.strerror or e}") from None
    return sock
