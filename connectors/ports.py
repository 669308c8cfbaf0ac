"""Loopback ports: whether one is free for a local service to bind.

The local broker (:mod:`connectors.kafka_broker`) and the local Flink cluster
(:mod:`connectors.flink_cluster`) both check their ports before starting, so
that a port another process holds is refused by name rather than found out
from a JVM's log.
"""

from __future__ import annotations

import socket

__all__ = ["LOOPBACK", "free_port", "port_is_free"]

#: The address local services bind by default.
LOOPBACK = "127.0.0.1"


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on ``host:port`` and we could bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A port free on ``host`` right now (the system's choice; another process may take it
    before it is bound: fine for benchmarks, which start one service at a time)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
