"""The communicator: collectives and tagged messages between the ranks of one engine.

``base`` is the interface the executor codes against; ``bootstrap`` opens one communicator per
worker through the scheduler; ``ucxx_transport`` and ``tcp`` move the bytes.
"""

from engine.comm.base import Communicator, CommunicatorError, PeerFailedError, QueryAbortedError
from engine.comm.bootstrap import CommGroup, communicator_for, open_communicators

__all__ = [
    "CommGroup",
    "Communicator",
    "CommunicatorError",
    "PeerFailedError",
    "QueryAbortedError",
    "communicator_for",
    "open_communicators",
]
