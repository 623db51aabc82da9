"""Test-suite wide configuration: the Hypothesis profiles.

The profile comes from the ``HYPOTHESIS_PROFILE`` environment variable:

* ``dev`` (the default on a workstation): 50 examples per property, quick feedback;
* ``ci`` (the default when ``CI=true``): derandomized, so a CI failure reproduces on any machine,
  with no deadline (CI machines are slow and noisy) and the reproduction blob printed;
* ``sim``: long runs, 2000 examples per property (``tox -e sim``, nightly).

``--core-coverage`` (with ``--cov=presence_core``) is what CI runs: the whole suite, with the
core's branch coverage measured only while the core's own tests, ``tests/core``, run (and while
the core is imported, here, before any test module). Another test exercising a core branch does
not count for it, as if ``tests/core`` had run alone, and the rest of the suite runs at full
speed (measuring coverage about doubles the time of the code it traces). CI then requires the
report to be 100 % (``.ci/run``); no run is ever failed for its coverage by pytest itself.

This file sits at the root of ``tests/`` without an ``__init__.py`` next to it, so pytest puts
``tests/`` on ``sys.path``: shared helpers in ``tests/`` are importable as plain modules.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

# The core's import-time code counts for its coverage under --core-coverage: import it before
# any test module can, and before coverage pauses for one.
import presence_core  # noqa: F401

if TYPE_CHECKING:
    from coverage import Coverage

CORE_TESTS = "tests/core/"
"""The node ids of the core's own tests start with this."""

settings.register_profile("dev", max_examples=50)
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("sim", max_examples=2000, deadline=None)


def _profile_name() -> str:
    explicit = os.environ.get("HYPOTHESIS_PROFILE", "").strip()
    if explicit:
        return explicit
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        return "ci"
    return "dev"


HYPOTHESIS_PROFILE = _profile_name()
# An unknown name raises InvalidArgument here, before any test runs: a typo must not silently
# fall back to another profile.
settings.load_profile(HYPOTHESIS_PROFILE)


def pytest_report_header(config: pytest.Config) -> str:
    return f"hypothesis profile: {HYPOTHESIS_PROFILE!r} (set HYPOTHESIS_PROFILE to change it)"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--core-coverage",
        action="store_true",
        help="with --cov=presence_core: measure the core's coverage only while the tests in "
        f"{CORE_TESTS} run (the rest of the suite runs unmeasured, at full speed)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("core_coverage"):
        return
    if config.getoption("cov_source", None) != ["presence_core"]:
        raise pytest.UsageError("--core-coverage needs --cov=presence_core (and no other --cov)")
    if config.getoption("cov_context", None):
        raise pytest.UsageError("--core-coverage cannot be combined with --cov-context")


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    # Importing a test module outside tests/core runs unmeasured (its module-level code too).
    if isinstance(collector, pytest.Module):
        with _unmeasured_unless_core(collector.config, collector.nodeid):
            return (yield)
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    # A test outside tests/core runs unmeasured: setup, call and teardown.
    with _unmeasured_unless_core(item.config, item.nodeid):
        return (yield)


@contextlib.contextmanager
def _unmeasured_unless_core(config: pytest.Config, nodeid: str) -> Iterator[None]:
    coverage = _core_coverage(config)
    if coverage is None or nodeid.startswith(CORE_TESTS):
        yield
        return
    coverage.stop()
    try:
        yield
    finally:
        coverage.start()


def _core_coverage(config: pytest.Config) -> Coverage | None:
    """The measurement ``--cov=presence_core --core-coverage`` runs, else ``None``."""
    if not config.getoption("core_coverage"):
        return None
    from coverage import Coverage

    return Coverage.current()
