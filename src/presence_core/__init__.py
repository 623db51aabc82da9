"""presence-core: Phoenix Presence for Python, as a pure, deterministic state machine.

Everything documented here is public; everything else (including the private ``_modules``) may
change without notice.
"""

from __future__ import annotations

from ._errors import AlreadyTracked as AlreadyTracked
from ._errors import ConfigurationError as ConfigurationError
from ._errors import LimitExceeded as LimitExceeded
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import NoPresence as NoPresence
from ._errors import PresenceError as PresenceError
from ._errors import RemoteProtocolError as RemoteProtocolError
from ._meta import JSONValue as JSONValue
from ._meta import Meta as Meta
from ._state import Delta as Delta
from ._state import Entry as Entry
from ._state import MergeResult as MergeResult
from ._state import ReplicaState as ReplicaState
from ._state import Snapshot as Snapshot
from ._state import merge_deltas as merge_deltas
from ._vclock import Clock as Clock
from ._vclock import Context as Context
from ._vclock import ReplicaRef as ReplicaRef
from ._vclock import append_clock as append_clock
from ._vclock import dominates as dominates
from ._vclock import dominates_or_equal as dominates_or_equal
from ._vclock import lowerbound as lowerbound
from ._vclock import upperbound as upperbound

__version__ = "0.1.0"

__all__ = [
    "AlreadyTracked",
    "Clock",
    "ConfigurationError",
    "Context",
    "Delta",
    "Entry",
    "JSONValue",
    "LimitExceeded",
    "LocalProtocolError",
    "MergeResult",
    "Meta",
    "NoPresence",
    "PresenceError",
    "RemoteProtocolError",
    "ReplicaRef",
    "ReplicaState",
    "Snapshot",
    "append_clock",
    "dominates",
    "dominates_or_equal",
    "lowerbound",
    "merge_deltas",
    "upperbound",
]
