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
  :class:`NetworkModel`, a :class:`Workload` and a schedule of :class:`Fault` events. Build one by
  hand, or from a few numbers with :class:`SimParams` (what the ``presence simulate`` command
  does). :class:`Bounds` derives the invariants' time limits from it. Each validates its fields
  when built (``ValueError``): nothing NaN or infinite, a rate from 0 (no workload) to
  :data:`MAX_RATE`, a tick and a check interval of at least :data:`MIN_PERIOD`, so a run that
  starts also ends.
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
* ``_invariants``: the checks below, and the client-side view they replay diffs into.
* ``_results``: :class:`SimResult` with the invariant :class:`Violation` list, the
  :class:`Metrics` and the trace digest.

Invariants checked (see :class:`Bounds` for the numbers, all derived from the TrackerConfig, the
slowest clock rate and the network's ``max_latency``):

* ``convergence``: after the settle phase (partitions healed, paused nodes resumed, network calm,
  workload stopped) and :attr:`Bounds.settle`, every live replica lists exactly the presences the
  live connections tracked (a plain dict model), and all replicas agree.
* ``crashed_presence``: no presence of a crashed (or shut down, or replaced) incarnation is visible
  on a running replica later than :attr:`Bounds.crash` after the crash.
* ``missing_presence``: a presence of a running node is visible on every other running node within
  :attr:`Bounds.join` of the latest of: its track/update, the last disturbance of either node (a
  message to or from it dropped by loss or a partition, a partition change, a pause, a restart).
* ``duplicate_ref``: every ``phx_ref`` handed out in the run is unique.
* ``diff_replay``: each replica's :class:`~presence_core.PresenceDiff` events, replayed in order
  with phoenix.js ``syncDiff`` semantics on an empty client view, reproduce ``list(topic)``.
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
