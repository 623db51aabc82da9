"""presence-core: Phoenix Presence for Python, as a pure, deterministic state machine.

Everything documented here is public; everything else (including the private ``_modules``) may
change without notice.
"""

from __future__ import annotations

from ._client import ClassifiedDiff as ClassifiedDiff
from ._client import ClientState as ClientState
from ._client import ClientView as ClientView
from ._client import Joined as Joined
from ._client import Left as Left
from ._client import MetaUpdate as MetaUpdate
from ._client import SyncResult as SyncResult
from ._client import classify_diff as classify_diff
from ._client import list_presences as list_presences
from ._client import sync_diff as sync_diff
from ._client import sync_state as sync_state
from ._codec import WIRE_VERSION as WIRE_VERSION
from ._codec import DecodeLimits as DecodeLimits
from ._codec import decode_message as decode_message
from ._codec import encode_message as encode_message
from ._config import TrackerConfig as TrackerConfig
from ._deltas import DeltaGenerations as DeltaGenerations
from ._errors import AlreadyTracked as AlreadyTracked
from ._errors import ConfigurationError as ConfigurationError
from ._errors import InvalidArgument as InvalidArgument
from ._errors import LimitExceeded as LimitExceeded
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import NoPresence as NoPresence
from ._errors import PresenceError as PresenceError
from ._errors import RemoteProtocolError as RemoteProtocolError
from ._events import Event as Event
from ._events import PresenceDiff as PresenceDiff
from ._events import ReplicaDown as ReplicaDown
from ._events import ReplicaPermdown as ReplicaPermdown
from ._events import ReplicaUp as ReplicaUp
from ._events import Unsendable as Unsendable
from ._lifecycle import LIFECYCLE as LIFECYCLE
from ._lifecycle import Lifecycle as Lifecycle
from ._lifecycle import LifecycleInput as LifecycleInput
from ._liveness import TRANSITIONS as TRANSITIONS
from ._liveness import LivenessAction as LivenessAction
from ._liveness import LivenessInput as LivenessInput
from ._liveness import ReplicaStatus as ReplicaStatus
from ._messages import GracefulPermdown as GracefulPermdown
from ._messages import Heartbeat as Heartbeat
from ._messages import Message as Message
from ._messages import Outbound as Outbound
from ._messages import TransferAck as TransferAck
from ._messages import TransferRequest as TransferRequest
from ._meta import JSONValue as JSONValue
from ._meta import Meta as Meta
from ._meta import ReadOnlyError as ReadOnlyError
from ._meta import thaw_meta as thaw_meta
from ._parts import encode_parts as encode_parts
from ._payloads import Delta as Delta
from ._payloads import Entry as Entry
from ._payloads import MergeResult as MergeResult
from ._payloads import Snapshot as Snapshot
from ._payloads import SnapshotPart as SnapshotPart
from ._payloads import merge_deltas as merge_deltas
from ._presence import PresenceMap as PresenceMap
from ._presence import group as group
from ._presence import presence_diff_payload as presence_diff_payload
from ._refs import RefGenerator as RefGenerator
from ._rooms import Occupancy as Occupancy
from ._rooms import PresencePage as PresencePage
from ._rooms import TopicOptions as TopicOptions
from ._security import AuthenticationError as AuthenticationError
from ._security import Key as Key
from ._security import Keyring as Keyring
from ._security import MessageRejected as MessageRejected
from ._security import RejectReason as RejectReason
from ._security import ReplayWindow as ReplayWindow
from ._security import Sealed as Sealed
from ._security import seal as seal
from ._security import unseal as unseal
from ._state import ReplicaState as ReplicaState
from ._tracker import MetaUpdater as MetaUpdater
from ._tracker import ReplicaInfo as ReplicaInfo
from ._tracker import Tracker as Tracker
from ._tracker import TrackerStats as TrackerStats
from ._users import UserEvent as UserEvent
from ._users import UserJoined as UserJoined
from ._users import UserLeft as UserLeft
from ._users import UserView as UserView
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
    "TRANSITIONS",
    "WIRE_VERSION",
    "AlreadyTracked",
    "AuthenticationError",
    "ClassifiedDiff",
    "ClientState",
    "ClientView",
    "Clock",
    "ConfigurationError",
    "Context",
    "DecodeLimits",
    "Delta",
    "DeltaGenerations",
    "Entry",
    "Event",
    "GracefulPermdown",
    "Heartbeat",
    "InvalidArgument",
    "JSONValue",
    "Joined",
    "Key",
    "Keyring",
    "Left",
    "LIFECYCLE",
    "Lifecycle",
    "LifecycleInput",
    "LimitExceeded",
    "LivenessAction",
    "LivenessInput",
    "LocalProtocolError",
    "MergeResult",
    "Message",
    "MessageRejected",
    "Meta",
    "MetaUpdate",
    "MetaUpdater",
    "NoPresence",
    "Occupancy",
    "Outbound",
    "PresenceDiff",
    "PresenceError",
    "PresenceMap",
    "PresencePage",
    "ReadOnlyError",
    "RefGenerator",
    "RejectReason",
    "RemoteProtocolError",
    "ReplayWindow",
    "ReplicaDown",
    "ReplicaInfo",
    "ReplicaPermdown",
    "ReplicaRef",
    "ReplicaState",
    "ReplicaStatus",
    "ReplicaUp",
    "Sealed",
    "Snapshot",
    "SnapshotPart",
    "SyncResult",
    "TopicOptions",
    "Tracker",
    "TrackerConfig",
    "TrackerStats",
    "TransferAck",
    "TransferRequest",
    "Unsendable",
    "UserEvent",
    "UserJoined",
    "UserLeft",
    "UserView",
    "append_clock",
    "classify_diff",
    "decode_message",
    "dominates",
    "dominates_or_equal",
    "encode_message",
    "encode_parts",
    "group",
    "list_presences",
    "lowerbound",
    "merge_deltas",
    "presence_diff_payload",
    "seal",
    "sync_diff",
    "sync_state",
    "thaw_meta",
    "unseal",
    "upperbound",
]
