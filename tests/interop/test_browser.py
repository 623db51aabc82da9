"""The presence page in a real browser: Debian's chromium, driven by playwright-core (Node).

One uvicorn server serves ``create_app(..., page=True)``; ``browser_check.mjs`` opens the page
in two browser contexts (alice and bob), checks that each sees the other live, that a second tab
counts as a second connection, that the page reconnects and rejoins when its connection drops,
and that bob's leaving shows on alice's page.

Set ``PRESENCE_SCREENSHOT=path.png`` to save the page with both users online (the picture in
the docs, ``docs/phoenix-page.png``, is made that way; CI does not set it). Under ``CI=true`` a
missing chromium fails the test; elsewhere it skips it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

from interop_support import missing, run_node, serving
from interop_support import node_packages as node_packages  # the fixture

from presence_adapters.drivers.asyncio import open_node
from presence_adapters.phoenix import Accept, JoinRequest, Reject, create_app

BROWSER_TIMEOUT = 90.0
"""Seconds the whole browser scenario may take (it takes a few)."""

STEPS = [
    "launch",
    "alice joins through the form",
    "bob joins through the URL",
    "alice opens a second tab",
    "alice's connection drops and comes back",
    "bob closes his window",
    "page errors",
]


def chromium() -> str:
    """The chromium binary (``CHROMIUM``, else Debian's ``/usr/bin/chromium``)."""
    path = os.environ.get("CHROMIUM") or "/usr/bin/chromium"
    if not (Path(path).is_file() and os.access(path, os.X_OK)):
        found = shutil.which("chromium")
        if found is None:
            missing(f"chromium ({path}; apt-get install chromium)")
        assert found is not None
        path = found
    return path


async def on_join(request: JoinRequest) -> Accept | Reject:
    user = request.payload.get("user")
    if not request.topic.startswith("room:") or not isinstance(user, str) or not user:
        return Reject("unauthorized")
    return Accept(key=user, meta={"online_at": 1712345678})


async def page_in_browser(node: str, browser: str, screenshot: str | None) -> tuple[Any, ...]:
    app = create_app(open_node, on_join=on_join, page=True)
    async with serving(app) as url:
        args = [url] if screenshot is None else [url, screenshot]
        return await run_node(
            node, "browser_check.mjs", args, timeout=BROWSER_TIMEOUT, env={"CHROMIUM": browser}
        )


def test_two_users_see_each_other_in_the_browser(node_packages: str) -> None:
    browser = chromium()
    screenshot = os.environ.get("PRESENCE_SCREENSHOT") or None
    if screenshot is not None:
        screenshot = str(Path(screenshot).resolve())
    code, lines, stdout, stderr = asyncio.run(page_in_browser(node_packages, browser, screenshot))
    report = f"exit status {code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    assert code == 0, report
    steps = [line["step"] for line in lines if "step" in line and line["step"] != "screenshot"]
    assert steps == STEPS, report
    assert all(line["ok"] for line in lines), report
    assert lines[-1]["done"] is True, report
    if screenshot is not None:
        assert Path(screenshot).stat().st_size > 0
