"""Documented == public: docs/api.rst documents exactly ``presence_core.__all__``,
docs/adapters-api.rst exactly ``presence_adapters.__all__`` and
``presence_adapters.phoenix.__all__`` (plus the conformance suites), and docs/testing.rst exactly
the ``__all__`` of the simulator and of its Hypothesis strategies.

Sphinx's ``-W`` build catches broken references but not a forgotten export, so these tests
compare the names. They also check that docs/architecture.rst places every module of both
packages, that the README and the docs' front page show the smallest embedding example as it is
in examples/, that the conformance-suite test shown in docs/transports.rst passes as written, and
that the replay example of docs/testing.rst finds the failure it says it finds.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import presence_adapters
import presence_adapters.phoenix
import presence_adapters.testing
import presence_core

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SRC = ROOT / "src" / "presence_core"
ADAPTERS_SRC = ROOT / "src" / "presence_adapters"

_DIRECTIVE = re.compile(
    r"^\.\. (?:auto(?:class|function|exception|data)|py:(?:class|function|exception|data))::"
    r"\s+(?:presence_core\.)?(\w+)\s*$",
    re.MULTILINE,
)


def _documented_names() -> set[str]:
    return set(_DIRECTIVE.findall((DOCS / "api.rst").read_text(encoding="utf-8")))


def test_every_export_is_documented() -> None:
    missing = sorted(set(presence_core.__all__) - _documented_names())
    assert not missing, f"exported from presence_core but not documented in docs/api.rst: {missing}"


def test_everything_documented_is_exported() -> None:
    extra = sorted(_documented_names() - set(presence_core.__all__))
    assert not extra, f"documented in docs/api.rst but not in presence_core.__all__: {extra}"


def test_architecture_places_every_core_module() -> None:
    text = (DOCS / "architecture.rst").read_text(encoding="utf-8")
    modules = sorted(path.name for path in SRC.glob("_*.py"))
    assert "_state.py" in modules
    missing = [name for name in modules if f"``{name}``" not in text]
    assert not missing, f"modules missing from docs/architecture.rst's layer table: {missing}"


def test_architecture_places_every_adapters_module() -> None:
    # The adapters' table names each module by its path in the package (``drivers/_pump.py``).
    text = (DOCS / "architecture.rst").read_text(encoding="utf-8")
    modules = sorted(
        path.relative_to(ADAPTERS_SRC).as_posix()
        for path in ADAPTERS_SRC.rglob("*.py")
        if path.name != "__init__.py"
    )
    assert "drivers/_pump.py" in modules
    missing = [name for name in modules if f"``{name}``" not in text]
    assert not missing, f"modules missing from docs/architecture.rst's adapters table: {missing}"


def test_the_state_tables_in_the_docs_are_drawn_from_the_code() -> None:
    # docs/tracker.rst shows the liveness and lifecycle tables and diagrams that
    # docs/state_machines.py draws from TRANSITIONS and LIFECYCLE at every build (their content is
    # checked by tests/core/test_lifecycle.py), never a copy written by hand that could drift.
    text = (DOCS / "tracker.rst").read_text(encoding="utf-8")
    for name in ("liveness", "lifecycle"):
        assert f".. graphviz:: _generated/{name}.dot\n" in text, name
        assert f".. include:: _generated/{name}.rst\n" in text, name


# ---------------------------------------------------------------------- the adapters' reference

_MODULE = re.compile(r"^\.\. (?:py:)?(?:current)?module:: +([\w.]+) *$")
_ADAPTER_DIRECTIVE = re.compile(
    r"^\.\. (?:auto(?:class|function|exception|data)|py:(?:class|function|exception|data))::"
    r" +([\w.]+)(?:\(.*\))? *$"
)


def _adapter_names(page: str = "adapters-api.rst") -> dict[str, set[str]]:
    """``{module: {name, ...}}`` of every object ``docs/{page}`` documents."""
    documented: dict[str, set[str]] = {}
    module = ""
    for line in (DOCS / page).read_text(encoding="utf-8").splitlines():
        if found := _MODULE.match(line):
            module = found.group(1)
        elif found := _ADAPTER_DIRECTIVE.match(line):
            target = found.group(1)
            where, _, name = target.rpartition(".")
            if where and not where.startswith("presence_adapters"):
                where = f"{module}.{where}"
            documented.setdefault(where or module, set()).add(name)
    return documented


def test_every_adapters_export_is_documented() -> None:
    documented = _adapter_names().get("presence_adapters", set())
    missing = sorted(set(presence_adapters.__all__) - documented)
    assert not missing, (
        f"exported from presence_adapters but not documented in docs/adapters-api.rst: {missing}"
    )
    extra = sorted(documented - set(presence_adapters.__all__))
    assert not extra, (
        f"documented as presence_adapters.X in docs/adapters-api.rst but not exported: {extra}"
    )


def test_every_phoenix_export_is_documented() -> None:
    documented = _adapter_names().get("presence_adapters.phoenix", set())
    exported = set(presence_adapters.phoenix.__all__)
    missing = sorted(exported - documented)
    assert not missing, (
        f"exported from presence_adapters.phoenix but not documented in docs/adapters-api.rst: "
        f"{missing}"
    )
    extra = sorted(documented - exported)
    assert not extra, (
        f"documented as presence_adapters.phoenix.X in docs/adapters-api.rst but not exported: "
        f"{extra}"
    )


def test_both_drivers_and_the_conformance_suites_are_documented() -> None:
    documented = _adapter_names()
    for driver in ("presence_adapters.drivers.asyncio", "presence_adapters.drivers.anyio"):
        assert "open_node" in documented.get(driver, set()), driver
    testing = documented.get("presence_adapters.testing", set())
    missing = sorted(set(presence_adapters.testing.__all__) - testing)
    assert not missing, f"presence_adapters.testing names not in docs/adapters-api.rst: {missing}"
    # Each check is documented by an automodule of its module, which follows the module's __all__.
    text = (DOCS / "adapters-api.rst").read_text(encoding="utf-8")
    for name, checks in (
        ("transport", presence_adapters.testing.TRANSPORT_CHECKS),
        ("driver", presence_adapters.testing.DRIVER_CHECKS),
    ):
        module = f"presence_adapters.testing.{name}"
        assert f".. automodule:: {module}\n   :members:\n" in text, module
        exported = set(importlib.import_module(module).__all__)
        unlisted = sorted(check.__name__ for check in checks if check.__name__ not in exported)
        assert not unlisted, f"checks missing from {module}.__all__, so from the docs: {unlisted}"


def test_the_simulator_and_its_strategies_are_documented() -> None:
    # Their reference is the end of docs/testing.rst; the strategies need Hypothesis, which the
    # test suite has.
    documented = _adapter_names("testing.rst")
    for module in ("presence_adapters.simulation", "presence_adapters.testing.strategies"):
        exported = set(importlib.import_module(module).__all__)
        names = documented.get(module, set())
        assert names == exported, (
            f"{module}: not documented in docs/testing.rst: {sorted(exported - names)}; "
            f"documented but not exported: {sorted(names - exported)}"
        )


# ---------------------------------------------------------------------- examples shown in docs


def _smallest_example() -> str:
    """examples/embed_asyncio.py as the README shows it: without its module docstring and the
    ``__future__`` import."""
    text = (ROOT / "examples" / "embed_asyncio.py").read_text(encoding="utf-8")
    text = text[text.index('"""', 3) + 3 :]
    text = text.replace("from __future__ import annotations\n", "")
    return text.strip()


def test_the_readme_opens_with_the_smallest_embedding_example() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_python = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert first_python.strip() == _smallest_example()


def test_the_front_page_shows_the_smallest_embedding_example() -> None:
    index = (DOCS / "index.rst").read_text(encoding="utf-8")
    block = index.split(".. code-block:: python\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("   "):
            break
        lines.append(line)
    assert textwrap.dedent("\n".join(lines)).strip() == _smallest_example()


def _code_block(page: str, caption: str) -> str:
    text = (DOCS / page).read_text(encoding="utf-8")
    head = f".. code-block:: python\n   :caption: {caption}\n\n"
    assert head in text, f"no code block captioned {caption!r} in docs/{page}"
    lines = []
    for line in text.split(head, 1)[1].splitlines():
        if line and not line.startswith("   "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines)).strip() + "\n"


def test_the_conformance_test_in_the_docs_passes(tmp_path: Path) -> None:
    # docs/transports.rst shows a complete pytest file that runs the transport suite on the
    # memory hub: run it as written, in a fresh pytest, with warnings as errors.
    (tmp_path / "test_my_transport.py").write_text(
        _code_block("transports.rst", "test_my_transport.py"), encoding="utf-8"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    expected = 2 * len(presence_adapters.testing.TRANSPORT_CHECKS)  # asyncio and trio
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{expected} passed" in result.stdout, result.stdout


def test_the_replay_example_in_the_docs_finds_its_bug(tmp_path: Path) -> None:
    # docs/testing.rst replays a failure from its seed, with a planted bug: run it as written, in
    # a fresh interpreter, and check that it prints what the page says it prints.
    code = _code_block("testing.rst", "replay.py")
    (tmp_path / "replay.py").write_text(code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "replay.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    violation, *trace = result.stdout.splitlines()
    claimed = re.search(r"print\(result\.violations\[0\]\) +# (.+) \.\.\.$", code, re.MULTILINE)
    assert claimed, "the example no longer says what its violation reads"
    assert violation.startswith(f"{claimed.group(1)} "), violation
    page = " ".join((DOCS / "testing.rst").read_text(encoding="utf-8").split())
    assert f"The violation reads ``{violation}``" in page, violation
    # What the page says the end of the trace shows: the restart, the resurrected incarnation.
    ref = re.search(r"\(ref (\S+)\)", violation)
    assert ref, violation
    assert len(trace) == 40
    shown = "\n".join(trace)
    for line in ("fault restart n1", "start n1.2", "heartbeat-empty n1.1"):
        assert line in shown, line
    for node in ("n0", "n2", "n3", "n4"):
        assert f"ReplicaUp {node} n1.1" in shown, node
    assert any(line.split()[2] == "diff" and ref.group(1) in line for line in trace), ref


def test_the_constants_documented_in_adapters_api_have_their_values() -> None:
    # py:data entries carry their value by hand (autodoc cannot document a re-exported constant).
    text = (DOCS / "adapters-api.rst").read_text(encoding="utf-8")
    entries = re.findall(
        r"^\.\. py:data:: ([\w.]+)\n   :type: \w+\n   :value: ([\d.]+)$", text, flags=re.MULTILINE
    )
    assert len(entries) >= 5
    module = ""
    current: dict[str, str] = {}
    for line in text.splitlines():
        if found := _MODULE.match(line):
            module = found.group(1)
        elif line.startswith(".. py:data:: "):
            name = line.split()[-1]
            current[name] = name if "." in name else f"{module}.{name}"
    for name, value in entries:
        where, _, attribute = current[name].rpartition(".")
        actual = getattr(importlib.import_module(where), attribute)
        assert actual == float(value), f"docs/adapters-api.rst says {name} = {value}, not {actual}"
