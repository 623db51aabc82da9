"""Three presence nodes in one asyncio process: alice joins on one, another sees her come and go.

Run it with ``python examples/embed_asyncio.py`` (standard library and presence-core only).
"""

from __future__ import annotations

import asyncio

from presence_adapters import MemoryHub
from presence_adapters.drivers.asyncio import open_node


async def main() -> None:
    hub = MemoryHub()  # an in-process bus that the three nodes share
    async with (
        open_node(hub.connect("a")) as a,
        open_node(hub.connect("b")),
        open_node(hub.connect("c")) as c,
        c.subscribe("room:lobby") as diffs,
    ):
        async with a.connection() as conn:  # untracks what it tracked when it exits
            conn.track("room:lobby", "alice", {"status": "online"})
            print("c sees", (await anext(diffs)).payload)
        print("c sees", (await anext(diffs)).payload)
        print("c knows", sorted(c.replicas()))


asyncio.run(main())
