"""`HOST:PORT` addresses in flags and config fields (no TensorFlow import)."""

from __future__ import annotations

from nntrain.errors import NntrainError


def host_port(address: str, name: str, example: str) -> tuple[str, int]:
    """(host, port) of `HOST:PORT`; otherwise NntrainError naming the setting `name` and an `example`."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise NntrainError(f"{name}: '{address}' is not HOST:PORT; write e.g. {example}")
    return host, int(port)
