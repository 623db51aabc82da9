"""Deterministic cluster simulation: many Trackers on a virtual clock over a seeded, faulty network.

Everything runs in one thread with no real time. A heap of ``(time, seq, action)`` is the virtual
clock: the simulation jumps straight to the next action (a tracker's timer deadline, a message
delivery, a workload operation, a scheduled fault or an invariant check), so simulated hours take
seconds. Every random choice comes from one ``random.Random(seed)``, so a run is a function of its
:class:`Scenario`: the same scenario gives the same trace digest, on any machine and under any
``PYTHONHASHSEED``, and a failure replays from its seed alone.

The simulator is a driver like the asyncio and anyio ones: each node incarnation is a tracker
wrapped in a :class:`~presence_adapters.drivers.Pump`, and what travels on the virtual network is
the bytes the pump encoded. Every message of a run goes through the wire codec both ways, so a
codec or glue bug shows up here first (as a ``malformed`` violation).

The pieces, one module each:

* ``_scenario``: :class:`Scenario` (frozen): nodes, seed, duration, the :class:`TrackerConfig`, a
  :class:`NetworkModel`, a :class:`Workload`, a schedule of :class:`Fault` events and per-topic
  :class:`~presence_core.TopicOptions`. Build one by hand, or from a few numbers with
  :class:`SimParams` (what the ``presence simulate`` command does). :class:`Bounds` derives the
  invariants' time limits from it. Each validates its fields when built (``ValueError``):
  nothing NaN or infinite, a rate from 0 (no workload) to :data:`MAX_RATE`, a tick and a check
  interval of at least :data:`MIN_PERIOD`, so a run that starts also ends.
* ``_network``: :class:`NetworkModel` decides the fate of each message (a list of delivery delays:
  empty means lost, two means duplicated). :class:`FaultyNetwork` is the stock model (latency,
  loss, duplication, reordering); subclass :class:`NetworkModel` to plug your own. Partitions
  (including one-way ones) are faults, applied by the simulation before the model is asked.
* ``_engine``: :class:`Simulation` runs a scenario once, driving every node through its pump,
  and returns a :class:`SimResult`; :func:`run` is the shortcut. A :data:`TrackerFactory` builds
  each node's tracker, so your own subclass or wrapper can be simulated.
* Authenticated replication: with :attr:`Scenario.keyring` (:attr:`SimParams.sealed`, ``presence
  simulate --sealed``) every node seals what it sends and checks what it receives. A
  ``restart`` :class:`Fault` may carry the keyring of the node's new incarnation: a roll of a key
  rotation is a shutdown and a restart of every node in turn, each with the new keyring.
* Topic modes beyond Phoenix: a leave grace period for every topic
  (``TrackerConfig.leave_grace_period``, :attr:`SimParams.grace`) or per topic, and large rooms
  (diffs batched per tick), through :attr:`Scenario.topic_options` (:attr:`SimParams.large_rooms`
  makes the first topics large rooms). The options are set on each node's tracker with
  :meth:`~presence_core.Tracker.configure_topic` whenever it starts or restarts. With a grace
  period, :attr:`Bounds.settle` grows by it, so every leave held back is delivered by the end.
  A node lists such a topic as its subscribers were shown it (a key in its grace period still
  listed, a large room's change from the tick that delivers it), and the checks judge what is
  listed: :meth:`Bounds.crash_of` and :meth:`Bounds.join_of` give each topic the time its grace
  period and its large-room tick add.
* Flap workloads (:attr:`Workload.flaps`, :attr:`SimParams.flaps`): keys of their own
  (``flap<n>``) whose one connection disconnects and reconnects with a new connection id,
  within the topic's grace period or beyond it, on the same node or another (a handover), then
  stays or leaves for good. :meth:`Scenario.flap_window` gives, per topic, the longest gap that
  is within the grace period at every observer and the shortest that is beyond it, from the
  grace period, the slowest and fastest clocks and :attr:`Bounds.flap_slack` (the latest a
  change reaches another node's subscribers); the workload keeps clear of the margin between.
* ``_invariants``: the checks below, and the client-side view they replay diffs into.
* ``_results``: :class:`SimResult` with the invariant :class:`Violation` list, the
  :class:`Metrics` and the trace digest.

Invariants checked (see :class:`Bounds` for the numbers, all derived from the TrackerConfig, the
slowest clock rate and the network's ``max_latency``):

* ``convergence``: after the settle phase (partitions healed, paused nodes resumed, network calm,
  workload stopped) and :attr:`Bounds.settle`, every live replica lists exactly the presences the
  live connections tracked (a plain dict model), and all replicas agree. (The convergence
  samples are measured on what is listed too: with a grace period, they include the grace
  period of the leaves they wait for.)
* ``crashed_presence``: no presence of a crashed (or shut down, or replaced) incarnation is listed
  on a running replica later than :meth:`Bounds.crash_of` its topic after the crash
  (:attr:`Bounds.crash`, plus the topic's grace period, plus a tick in a large room with one).
* ``missing_presence``: a presence of a running node is listed on every other running node within
  :meth:`Bounds.join_of` its topic (:attr:`Bounds.join`, plus a tick in a large room) of the
  latest of: its track/update, the last disturbance of either node (a message to or from it
  dropped by loss or a partition, a partition change, a pause, a restart).
* ``duplicate_ref``: every ``phx_ref`` handed out in the run is unique.
* ``diff_replay``: each replica's :class:`~presence_core.PresenceDiff` events, replayed in order
  with phoenix.js ``syncDiff`` semantics on an empty client view, reproduce ``list(topic)``
  exactly, at every check and in every topic, held leaves and large rooms' batches included
  (what is listed is what the diffs showed). In a topic with options the tracker's
  :meth:`~presence_core.Tracker.occupancy` must also count what ``list`` shows.
* ``flap_seen``: a flap key that reconnects within its grace period never shows its
  subscribers a leave: at every observer, the key's count of metas in the view replayed from
  its diffs never drops to zero between the disconnect and :attr:`Bounds.flap_slack` after the
  reconnect.
* ``leave_lost``: a real leave reaches every subscriber: a flap key gone beyond its grace
  period (or for good) drops to zero in every observer's replayed view within
  :meth:`Scenario.flap_window`'s ``beyond`` of the disconnect; and after the settle phase no
  tracker still holds a leave and no view shows a key ``list`` does not (every held leave was
  delivered), whatever the faults.
* ``leave_repeated``: a real leave reaches every subscriber once: a flap key gone beyond its
  grace period drops to zero once per leave in each observer's view; and no diff, of any key,
  ever leaves a presence its subscribers do not show (a leave delivered twice).

The flap timing checks (``flap_seen``, and ``leave_lost``/``leave_repeated`` per leave) judge an
observer only when nothing disturbed it, the node the key left or the node it came back on (a
start, stop, pause or resume, a partition or heal involving them), and no message was lost
between the observer and either node, since :attr:`Bounds.join` before the disconnect: then
when things reach it is unknowable. :attr:`Metrics.flaps_judged` and
:attr:`Metrics.flaps_skipped` count both. Under faults the checks that do not depend on timing
still hold: the end-of-run ``leave_lost``, ``leave_repeated`` on every diff, and
``diff_replay``.
* ``malformed``: no node rejects a delivered message as not valid (what one node's pump encoded,
  another's must decode).
* ``rejected``: no tracker refuses a delivered message (a
  :class:`~presence_core.MessageRejected` event) for a reason an honest cluster never gives (one
  whose :attr:`~presence_core.RejectReason.normal` is false): with a keyring, a node sealing with
  a key the others do not hold (a rotation done in one roll) breaks it. The refusals of every
  reason are counted in :attr:`Metrics.rejected`.

An exception raised by a tracker ends the run with an ``error`` violation.
"""

from __future__ import annotations

from ._engine import Simulation as Simulation
from ._engine import TrackerFactory as TrackerFactory
from ._engine import run as run
from ._network import FaultyNetwork as FaultyNetwork
from ._network import NetworkModel as NetworkModel
from ._network import message_size as message_size
from ._results import ConvergenceSample as ConvergenceSample
from ._results import Metrics as Metrics
from ._results import SimResult as SimResult
from ._results import Violation as Violation
from ._scenario import FAULT_MIXES as FAULT_MIXES
from ._scenario import MAX_RATE as MAX_RATE
from ._scenario import MIN_PERIOD as MIN_PERIOD
from ._scenario import SIM_CONFIG as SIM_CONFIG
from ._scenario import Bounds as Bounds
from ._scenario import Fault as Fault
from ._scenario import Scenario as Scenario
from ._scenario import SimParams as SimParams
from ._scenario import Workload as Workload

__all__ = [
    "FAULT_MIXES",
    "MAX_RATE",
    "MIN_PERIOD",
    "SIM_CONFIG",
    "Bounds",
    "ConvergenceSample",
    "Fault",
    "FaultyNetwork",
    "Metrics",
    "NetworkModel",
    "Scenario",
    "SimParams",
    "SimResult",
    "Simulation",
    "TrackerFactory",
    "Violation",
    "Workload",
    "message_size",
    "run",
]
