"""The ``presence`` command.

``presence simulate`` runs a whole cluster in the deterministic simulator
(:mod:`presence_adapters.simulation`) and reports whether presence converged, how fast, and what
it cost. With no arguments it runs the representative scenario: 5 nodes, client churn, a
partition that heals, a crash and a restart.

Exit status: 0 when every invariant held, 1 when one broke (the replay command is printed), 2 on
a usage error (a value out of range is refused before anything runs). ``presence --version``
prints the version.

Writing into a pipe that was closed early (``presence simulate | head -1``) ends the command
quietly, with no traceback, and with exit status 141: what the shell reports for a tool killed
by ``SIGPIPE`` (``128 + 13``), so a pipeline under ``set -o pipefail`` sees that the output was
cut short, as it would with ``cat`` or ``yes``.

``presence serve`` serves phoenix.js clients and the presence page (who is online in a room,
live) from one presence node: ``presence serve --port 4000``, then open http://127.0.0.1:4000/.
It tracks the join payload's ``"user"`` in topics ``room:*``. It needs the phoenix extra
(``pip install 'presence-core[phoenix]'``). ``--grace SECONDS`` gives every room a leave grace
period (``docs/grace-period.rst``) and ``--large-room TOPIC`` (repeated) makes a room a large
room (``docs/large-rooms.rst``); both are off by default, Phoenix's behaviour.

Replication is authenticated when a keyring is given: the file named by ``--key-file PATH``, or
else the text of the ``PRESENCE_KEYRING`` environment variable (the format:
:func:`presence_adapters.parse_keyring`). The secret itself is never a flag's value, where ``ps``
would show it to every user of the machine. An unreadable or invalid keyring stops the command
(status 2) before anything runs: it never falls back to unsealed replication.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from presence_adapters.simulation import (
    FAULT_MIXES,
    MAX_RATE,
    MIN_PERIOD,
    SimParams,
    SimResult,
    Simulation,
)
from presence_core import ConfigurationError, Keyring, TopicOptions, TrackerConfig, __version__

from ._keyfile import KEYRING_VARIABLE, load_keyring, parse_keyring

if TYPE_CHECKING:
    from presence_adapters import Presence, Transport
    from presence_adapters.phoenix import (
        Accept,
        JoinRequest,
        PhoenixApp,
        Reject,
        TopicOptionsHook,
    )

__all__ = ["main"]

MAX_USER_CHARS = 64
"""The longest user name ``presence serve`` tracks."""

EXIT_BROKEN_PIPE = 141
"""The exit status when standard output was closed early: ``128 + SIGPIPE``, as the shell reports
a tool killed by that signal."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="presence", description="Phoenix Presence for Python: tools."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    sim = commands.add_parser(
        "simulate",
        help="run a cluster in the deterministic simulator and check presence stays correct",
        description=(
            "Run N trackers on a virtual clock over a seeded faulty network, with a client "
            "workload and a fault schedule, and check the presence invariants. Same flags, "
            "same run: a failure replays from the printed command."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="fault mixes:\n"
        + "\n".join(f"  {name:<10} {text}" for name, text in FAULT_MIXES.items()),
    )
    sim.set_defaults(command_parser=sim)  # usage errors show this command's usage
    defaults = SimParams()
    sim.add_argument(
        "--nodes", type=int, default=defaults.nodes, help="replicas (default %(default)s)"
    )
    sim.add_argument(
        "--seed", type=int, default=defaults.seed, help="master seed (default %(default)s)"
    )
    sim.add_argument(
        "--duration",
        type=float,
        default=defaults.duration,
        help="virtual seconds of workload and faults before the settle: positive and finite "
        "(default %(default)s)",
    )
    sim.add_argument(
        "--faults",
        choices=sorted(FAULT_MIXES),
        default=defaults.faults,
        help="fault mix (default: %(default)s)",
    )
    sim.add_argument(
        "--rate",
        type=float,
        default=defaults.rate,
        help=f"client operations per virtual second, cluster-wide, from 0 (no workload: faults "
        f"and heartbeats only) to {MAX_RATE:g} (default %(default)s)",
    )
    sim.add_argument(
        "--topics", type=int, default=defaults.topics, help="topics, >= 1 (default %(default)s)"
    )
    sim.add_argument(
        "--keys", type=int, default=defaults.keys, help="presence keys, >= 1 (default %(default)s)"
    )
    sim.add_argument(
        "--broadcast-period",
        type=float,
        default=defaults.broadcast_period,
        help=f"tracker broadcast period in seconds, at least {MIN_PERIOD:g} (default %(default)s)",
    )
    sim.add_argument(
        "--max-message-bytes",
        type=int,
        default=None,
        metavar="BYTES",
        help="limit every replica message to BYTES (at least 1024): larger deltas and "
        "transfers travel in parts (default: the tracker's default limit)",
    )
    sim.add_argument(
        "--sealed",
        action="store_true",
        help="run the cluster with authenticated replication (every message sealed with a key "
        "derived from the seed)",
    )
    sim.add_argument(
        "--grace",
        type=float,
        default=defaults.grace,
        metavar="SECONDS",
        help="every tracker's leave grace period, finite and >= 0 (default %(default)s: none, "
        "as in Phoenix)",
    )
    sim.add_argument(
        "--flaps",
        type=float,
        default=defaults.flaps,
        metavar="RATE",
        help=f"flap episodes per virtual second, from 0 to {MAX_RATE:g}: keys that reconnect "
        "within the grace period or beyond it, on the same node or another; they need "
        "--grace (default %(default)s: none)",
    )
    sim.add_argument(
        "--large-rooms",
        type=int,
        default=defaults.large_rooms,
        metavar="N",
        help="put the first N topics (the hot ones) in large-room mode: one diff per tick "
        "(default %(default)s)",
    )
    sim.add_argument("--json", metavar="FILE", help="write the metrics as JSON ('-' for stdout)")
    sim.add_argument(
        "--plot", metavar="FILE", help="write a PNG of replica views and convergence over time"
    )
    sim.add_argument("--quiet", action="store_true", help="no progress bar")

    serve = commands.add_parser(
        "serve",
        help="serve phoenix.js clients and the presence page from one presence node",
        description=(
            "Serve the Phoenix Channels endpoint (phoenix.js connects to /socket) and the "
            "presence page at / (who is online in a room, live) from one presence node: on a "
            "private in-memory bus, or in a cluster over Redis or NATS with every other "
            "`presence serve` of the same broker. A join of a topic room:* with the payload "
            '{"user": NAME} tracks NAME (a non-empty string of at most '
            f"{MAX_USER_CHARS} characters) for as long as the channel is joined."
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface (default %(default)s)")
    serve.add_argument("--port", type=int, default=4000, help="TCP port (default %(default)s)")
    serve.add_argument("--name", help="the node's name (default: the host name and a random tag)")
    brokers = serve.add_mutually_exclusive_group()
    brokers.add_argument(
        "--redis", metavar="URL", help="join a cluster over Redis, e.g. redis://127.0.0.1:6379"
    )
    brokers.add_argument(
        "--nats", metavar="URL", help="join a cluster over NATS, e.g. nats://127.0.0.1:4222"
    )
    serve.add_argument(
        "--grace",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="a leave grace period for every room: a user who reconnects within it is one "
        "update for the other clients, never a leave then a join (default %(default)s: none, "
        "as in Phoenix)",
    )
    serve.add_argument(
        "--large-room",
        action="append",
        default=[],
        metavar="TOPIC",
        dest="large_rooms",
        help="make the room TOPIC (room:NAME) a large room: one presence_diff per broadcast "
        "period with the net changes; repeat for several",
    )
    serve.add_argument(
        "--key-file",
        metavar="PATH",
        help="authenticate replication with the keyring in this file: lines 'current ID SECRET' "
        "and 'accepted ID SECRET', SECRET in hex (default: the text of the "
        f"{KEYRING_VARIABLE} environment variable, if set; else messages travel unsealed)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``presence`` console script.

    Returns the exit status; a usage error (argparse's) raises :exc:`SystemExit` with status 2.
    """
    try:
        try:
            return _main(argv)
        finally:
            # Write out what is buffered now, so that a reader gone away shows up here, and not
            # as an "Exception ignored" message when the interpreter flushes on its way out.
            sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE


def _discard_stdout() -> None:
    # The reader is gone: point the stdout descriptor at /dev/null, so that the interpreter's
    # last flush of the unwritten rest succeeds silently (the recipe of Python's signal docs).
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # stdout replaced by an object without one
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "simulate":
        return _simulate(args, args.command_parser)
    if args.command == "serve":
        return _serve(args)
    parser.print_help()
    return 2


async def serve_on_join(request: JoinRequest) -> Accept | Reject:
    """``presence serve``'s join hook: track the payload's ``"user"`` in topics ``room:*``.

    A join of another topic is refused with ``"unknown topic"``; one whose ``"user"`` is not a
    non-empty string of at most :data:`MAX_USER_CHARS` characters with ``"invalid user"``. The
    meta is ``{"online_at": <unix seconds>}``.
    """
    from presence_adapters.phoenix import Accept, Reject

    if not _is_room(request.topic):
        return Reject("unknown topic")
    user = request.payload.get("user")
    if not isinstance(user, str) or not user.strip() or len(user) > MAX_USER_CHARS:
        return Reject("invalid user")
    return Accept(key=user, meta={"online_at": int(time.time())})


def serve_config(grace: float = 0.0) -> TrackerConfig | None:
    """The tracker config ``presence serve`` uses: Phoenix's defaults (``None``), with a leave
    grace period of ``grace`` seconds for every topic when it is not 0.

    Raises:
        ConfigurationError: ``grace`` is not a finite number ``>= 0``.
    """
    if grace == 0:
        return None
    return TrackerConfig(leave_grace_period=grace)


def serve_topic_options(large_rooms: Iterable[str] = ()) -> TopicOptionsHook | None:
    """The ``topic_options`` hook ``presence serve`` uses: large-room mode for the topics in
    ``large_rooms`` (each a ``room:NAME``, the topics it serves), the defaults for others;
    ``None`` when there are none.

    Raises:
        ConfigurationError: a topic is not ``room:NAME``.
    """
    options: dict[str, TopicOptions] = {}
    for topic in large_rooms:
        if not _is_room(topic):
            raise ConfigurationError(
                f"a large room must be a topic room:NAME, the topics served, not {topic!r}"
            )
        options[topic] = TopicOptions(large_room=True)
    return options.get if options else None


def _is_room(topic: str) -> bool:
    return topic.startswith("room:") and len(topic) > len("room:")


def serve_app(
    name: str | None = None,
    *,
    redis: str | None = None,
    nats: str | None = None,
    keyring: Keyring | None = None,
    grace: float = 0.0,
    large_rooms: Iterable[str] = (),
) -> PhoenixApp:
    """The application ``presence serve`` runs: the endpoint and the page, on one node (asyncio
    driver), on a private memory bus or in a cluster over Redis (``redis``) or NATS (``nats``),
    its replication sealed with ``keyring`` if given (see the driver's ``open_node``), with a
    leave grace period of ``grace`` seconds for every room (:func:`serve_config`) and the rooms
    of ``large_rooms`` in large-room mode (:func:`serve_topic_options`).

    Raises:
        ImportError: the extra a broker needs is not installed.
        ConfigurationError: ``grace`` is not a finite number ``>= 0``, or a large room is not a
            topic ``room:NAME``.
    """
    from presence_adapters import default_name
    from presence_adapters.drivers.asyncio import open_node
    from presence_adapters.phoenix import create_app

    config = serve_config(grace)
    topic_options = serve_topic_options(large_rooms)

    connect: Callable[[str], Awaitable[Transport]] | None = None
    if redis is not None:
        from presence_adapters.transports.redis import RedisTransport

        url = redis
        connect = lambda node: RedisTransport.connect(url, name=node)  # noqa: E731
    elif nats is not None:
        from presence_adapters.transports.nats import NatsTransport

        servers = nats
        connect = lambda node: NatsTransport.connect(servers, name=node)  # noqa: E731

    @contextlib.asynccontextmanager
    async def node() -> AsyncIterator[Presence]:
        node_name = name if name is not None else default_name()
        transport = None if connect is None else await connect(node_name)
        async with open_node(transport, name=node_name, keyring=keyring, config=config) as presence:
            yield presence

    return create_app(node, on_join=serve_on_join, page=True, topic_options=topic_options)


def serve_keyring(key_file: str | None, environ: Mapping[str, str]) -> Keyring | None:
    """The keyring ``presence serve`` uses: read from ``key_file`` if given, else from the
    :data:`~presence_adapters.KEYRING_VARIABLE` variable of ``environ`` if set, else ``None``.

    Raises:
        ConfigurationError: both are given, the variable is set but empty, or the text is not a
            keyring (the message never quotes a secret).
        OSError: the file cannot be read.
    """
    text = environ.get(KEYRING_VARIABLE)
    if key_file is not None:
        if text is not None:
            raise ConfigurationError(
                f"both --key-file and {KEYRING_VARIABLE} are set: give the keyring one way"
            )
        return load_keyring(key_file)
    if text is None:
        return None
    if not text.strip():
        # Set but empty: a secret that was meant to be there and is not (an unmounted secret,
        # a typo in a deployment). Refused, never read as "no authentication".
        raise ConfigurationError(f"{KEYRING_VARIABLE} is set but empty")
    return parse_keyring(text, source=KEYRING_VARIABLE)


def _serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        print(f"presence serve: --port must be 0 to 65535, not {args.port}", file=sys.stderr)
        return 2
    try:
        keyring = serve_keyring(args.key_file, os.environ)
    except (ConfigurationError, OSError) as exc:
        print(f"presence serve: no keyring: {exc}", file=sys.stderr)
        return 2
    try:
        serve_config(args.grace)
        serve_topic_options(args.large_rooms)
    except ConfigurationError as exc:
        print(f"presence serve: {exc}", file=sys.stderr)
        return 2
    try:
        import uvicorn

        app = serve_app(
            args.name,
            redis=args.redis,
            nats=args.nats,
            keyring=keyring,
            grace=args.grace,
            large_rooms=args.large_rooms,
        )
    except ImportError as exc:
        print(f"presence serve: {exc}", file=sys.stderr)
        return 2
    if keyring is not None:
        ids = ", ".join(key.id for key in keyring.accepted)
        print(
            f"presence serve: replication sealed with key {keyring.current.id!r}"
            + (f", also accepting {ids}" if ids else ""),
            file=sys.stderr,
        )
    elif args.redis is not None or args.nats is not None:
        print(
            "presence serve: replication is not authenticated: anything that can publish on the "
            f"broker is a member of the cluster (see --key-file and {KEYRING_VARIABLE})",
            file=sys.stderr,
        )
    print(
        f"presence serve: the presence page at http://{_url_host(args.host)}:{args.port}/, "
        f"phoenix.js connects to /socket (Ctrl-C stops)",
        flush=True,
    )
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info", lifespan="on")
    server = uvicorn.Server(config)
    # On Ctrl-C uvicorn shuts down gracefully, then raises it again: exit quietly, as `uvicorn`.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    # uvicorn returns without raising when the lifespan fails to start.
    return 0 if server.started else 1


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _sim_params(args: argparse.Namespace) -> SimParams:
    """The :class:`SimParams` of ``presence simulate``'s parsed flags (``ValueError`` when one
    is out of range)."""
    return SimParams(
        seed=args.seed,
        nodes=args.nodes,
        duration=args.duration,
        faults=args.faults,
        rate=args.rate,
        topics=args.topics,
        keys=args.keys,
        broadcast_period=args.broadcast_period,
        max_message_bytes=args.max_message_bytes,
        sealed=args.sealed,
        grace=args.grace,
        flaps=args.flaps,
        large_rooms=args.large_rooms,
    )


def _simulate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    out = sys.stdout
    try:
        params = _sim_params(args)
        scenario = params.scenario()
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(
                "presence: --plot needs matplotlib, which is not installed; install the plot "
                "extra: pip install 'presence-core[plot]' (or: pip install matplotlib)",
                file=sys.stderr,
            )
            return 2
    show = not args.quiet and args.json != "-"
    print(
        f"simulating {len(scenario.nodes)} nodes, seed {params.seed}, fault mix "
        f"{params.faults!r}, {params.duration:g} virtual seconds + settle"
        + (", replication sealed" if params.sealed else "")
        + (f", leave grace period {params.grace:g}s" if params.grace else "")
        + (f", {params.flaps:g} flap episodes per second" if params.flaps else "")
        + (f", {len(scenario.large_rooms())} large room(s)" if params.large_rooms else ""),
        file=out if show else sys.stderr,
        flush=True,  # before the run: a reader already gone is noticed before the work
    )
    if show:
        for fault in scenario.faults:
            print(f"  t={fault.at:8.3f}s  {fault.describe()}", file=out)
    progress = _Progress(sys.stderr) if show and sys.stderr.isatty() else None
    simulation = Simulation(
        scenario, timeline=bool(args.plot), on_progress=progress.update if progress else None
    )
    result = simulation.run()
    if progress is not None:
        progress.done()
    if args.json:
        data: dict[str, Any] = {
            "params": {
                "seed": params.seed,
                "nodes": params.nodes,
                "duration": params.duration,
                "faults": params.faults,
                "rate": params.rate,
                "topics": params.topics,
                "keys": params.keys,
                "broadcast_period": params.broadcast_period,
                "max_message_bytes": params.max_message_bytes,
                "sealed": params.sealed,
                "grace": params.grace,
                "flaps": params.flaps,
                "large_rooms": params.large_rooms,
            },
            "ok": result.ok,
            "digest": result.digest,
            "bounds": {
                "join": result.bounds.join,
                "crash": result.bounds.crash,
                "settle": result.bounds.settle,
            },
            "metrics": result.metrics.to_json(),
            "violations": [str(v) for v in result.violations],
            "replay": params.replay_command(),
        }
        text = json.dumps(data, indent=2, sort_keys=True)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
    if args.plot:
        _plot(result, args.plot)
    if args.json != "-":
        _report(result, params, out)
    return 0 if result.ok else 1


class _Progress:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def update(self, now: float, end: float) -> None:
        width = 40
        filled = int(width * min(1.0, now / end)) if end else width
        bar = "#" * filled + "-" * (width - filled)
        self._stream.write(f"\r[{bar}] {now:7.1f}/{end:.1f} virtual s")
        self._stream.flush()

    def done(self) -> None:
        self._stream.write("\r" + " " * 70 + "\r")
        self._stream.flush()


def _report(result: SimResult, params: SimParams, out: TextIO) -> None:
    m = result.metrics
    bounds = result.bounds
    print("", file=out)
    verdict = "CONVERGED: every invariant held" if result.ok else "FAILED: an invariant broke"
    print(verdict, file=out)
    print(
        f"  simulated {m.virtual_seconds:.1f} virtual s in {m.steps} steps, "
        f"{m.operations} client operations, {m.diffs} diffs emitted",
        file=out,
    )
    print("  convergence (virtual seconds after each disruption):", file=out)
    for sample in m.convergence:
        took = "did not converge" if sample.seconds is None else f"{sample.seconds:.3f}s"
        print(f"    {sample.cause:<16} at t={sample.at:8.3f}s  {took}", file=out)
    worst = m.worst_convergence
    print(
        f"  worst convergence: {'n/a' if worst is None else f'{worst:.3f}s'}"
        f"  (bounds: join {bounds.join:.2f}s, crash {bounds.crash:.2f}s, "
        f"settle {bounds.settle:.2f}s)",
        file=out,
    )
    print(
        f"  cost: {m.messages_per_replica_second:.1f} messages and "
        f"{m.bytes_per_replica_second:.0f} bytes per replica per second, "
        f"{m.dropped} dropped, largest transfer {m.largest_transfer} bytes",
        file=out,
    )
    if m.rejected:
        refused = ", ".join(f"{count} {reason}" for reason, count in m.rejected.items())
        print(f"  messages refused by their receiver: {refused}", file=out)
    print(f"  trace digest: {result.digest}", file=out)
    if not result.ok:
        print("", file=out)
        print(f"{len(result.violations)} violation(s); the first ones:", file=out)
        for violation in result.violations[:5]:
            print(f"  - {str(violation).splitlines()[0]}", file=out)
        print("", file=out)
        print(f"replay with: {params.replay_command()}", file=out)


def _plot(result: SimResult, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [row[0] for row in result.timeline]
    nodes = sorted({name for row in result.timeline for name in row[1]})
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    top.plot(times, [row[2] for row in result.timeline], "k--", label="model (expected)")
    for name in nodes:
        top.plot(times, [row[1].get(name, float("nan")) for row in result.timeline], label=name)
        bottom.plot(times, [row[3].get(name, float("nan")) for row in result.timeline], label=name)
    top.set_ylabel("visible presences")
    bottom.set_ylabel("presences differing\nfrom the model")
    bottom.set_xlabel("virtual seconds")
    for axis in (top, bottom):
        for fault in result.scenario.faults:
            axis.axvline(fault.at, color="grey", alpha=0.4, linewidth=0.8)
        axis.axvline(result.scenario.duration, color="green", alpha=0.6, linewidth=1.0)
    top.legend(loc="upper left", fontsize="small", ncol=4)
    top.set_title(
        f"seed {result.scenario.seed}: faults (grey), settle (green); "
        f"{'converged' if result.ok else 'FAILED'}"
    )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
