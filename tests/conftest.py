"""Test-suite wide configuration: the Hypothesis profiles.

The profile comes from the ``HYPOTHESIS_PROFILE`` environment variable:

* ``dev`` (the default on a workstation): 50 examples per property, quick feedback;
* ``ci`` (the default when ``CI=true``): derandomized, so a CI failure reproduces on any machine,
  with no deadline (CI machines are slow and noisy) and the reproduction blob printed;
* ``sim``: long runs, 2000 examples per property (``tox -e sim``, nightly).

This file sits at the root of ``tests/`` without an ``__init__.py`` next to it, so pytest puts
``tests/`` on ``sys.path``: shared helpers in ``tests/`` are importable as plain modules.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

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
