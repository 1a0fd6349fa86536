"""Which address a scheduler or worker binds to: the job's interface, never ``0.0.0.0``.

Binding to every interface would expose the cluster on networks the job does not use (a site
network, a public one); the launcher binds to a named interface, to loopback when the whole job
runs on one node, and otherwise to the address the node's own name resolves to.
"""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["LOOPBACK", "bind_address", "interface_address"]

LOOPBACK = "lo"
"""Interface name the planner picks for a job that runs on one node."""


def interface_address(name: str) -> str:
    """The IPv4 address of network interface ``name`` (``ib0``, ``eth0``, ``lo``)."""
    import psutil

    interfaces = psutil.net_if_addrs()
    if name not in interfaces:
        raise ValueError(
            f"network interface {name!r} does not exist on {socket.gethostname()}; "
            f"choose one of {', '.join(sorted(interfaces))}"
        )
    for address in interfaces[name]:
        if address.family == socket.AF_INET:
            return address.address
    raise ValueError(f"network interface {name!r} has no IPv4 address; choose another")


def _host_name_address() -> str | None:
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        return None
    return None if ipaddress.ip_address(address).is_loopback else address


def _first_non_loopback() -> str | None:
    import psutil

    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if (
                address.family == socket.AF_INET
                and not ipaddress.ip_address(address.address).is_loopback
            ):
                return address.address
    return None


def bind_address(interface: str | None) -> str:
    """The address to bind to: the interface's, else the node name's, else the first non-loopback.

    >>> bind_address("lo")
    '127.0.0.1'
    """
    if interface is not None:
        return interface_address(interface)
    address = _host_name_address() or _first_non_loopback()
    if address is None:
        raise ValueError(
            f"{socket.gethostname()} has no non-loopback IPv4 address for a multi-node job; "
            "pass --interface NAME"
        )
    return address
