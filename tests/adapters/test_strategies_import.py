"""presence_adapters.testing.strategies without Hypothesis: a clear error naming the extra.

Hypothesis comes with the ``test`` extra only, so a plain ``pip install presence-core`` lacks it.
Each check runs in a fresh interpreter whose import system refuses some modules as if they were
not installed, so that nothing this process already imported can hide the failure.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

_BLOCK = """
import sys

BLOCKED = {blocked!r}


class _NotInstalled:
    # First on sys.meta_path: these modules look absent, as on an install without them.
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled)
"""


def _run(code: str, *, blocked: tuple[str, ...] = ("hypothesis",)) -> str:
    """Run ``code`` in a fresh interpreter with ``blocked`` uninstalled; return its output."""
    script = _BLOCK.format(blocked=blocked) + textwrap.dedent(code)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_without_hypothesis_the_strategies_say_which_extra_to_install() -> None:
    out = _run(
        """
        try:
            import presence_adapters.testing.strategies
        except ImportError as exc:
            print(type(exc).__name__)
            print(exc.name)
            print(exc)
        else:
            print("imported")
        """
    )
    kind, name, message = out.splitlines()
    assert kind == "ModuleNotFoundError"
    assert name == "hypothesis"
    assert message == (
        "presence_adapters.testing.strategies needs Hypothesis, which the 'test' extra installs: "
        "pip install 'presence-core[test]'"
    )


def test_the_testing_helpers_and_the_simulator_do_not_need_hypothesis() -> None:
    out = _run(
        """
        import presence_adapters.simulation
        import presence_adapters.testing

        print(sorted(name for name in sys.modules if name.partition(".")[0] == "hypothesis"))
        print("presence_adapters.testing.strategies" in sys.modules)
        """
    )
    assert out.splitlines() == ["[]", "False"]


def test_a_missing_dependency_of_hypothesis_is_not_reported_as_hypothesis() -> None:
    # Hypothesis is installed but cannot import one of its own dependencies: its error stands.
    out = _run(
        """
        try:
            import presence_adapters.testing.strategies
        except ImportError as exc:
            print(exc.name)
            print(exc)
        """,
        blocked=("sortedcontainers",),
    )
    assert out.splitlines() == ["sortedcontainers", "No module named 'sortedcontainers'"]


def test_the_old_module_path_is_gone() -> None:
    # 0.1 moved the strategies to presence_adapters.testing.strategies, with no alias.
    assert importlib.util.find_spec("presence_adapters.strategies") is None
    assert importlib.util.find_spec("presence_adapters.testing.strategies") is not None
