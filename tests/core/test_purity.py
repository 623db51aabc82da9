"""The core is pure: no clock, no entropy, no I/O, no logging, no async runtime (DESIGN §3.1).

Two guards:

* a static scan of the AST of every module of ``presence_core``: banned imports, module-level
  ``random`` functions, I/O builtins and third-party imports other than attrs. This is the
  mandatory guard; ruff's TID251 rules in pyproject.toml are a second layer.
* a dynamic check: importing every module of ``presence_core`` in a fresh interpreter must not
  load a banned module. It only sees modules that are not already loaded at interpreter start or
  by attrs (``os``, ``io``, ``time``, ``threading`` are), so it catches indirect imports through
  an innocent-looking stdlib module; the static scan covers the rest.

The scanner is tested on synthetic sources too, so a scanner that finds nothing cannot pass.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

import presence_core

# Modules that read a clock, draw entropy, do I/O, log, spawn or run an event loop.
BANNED_MODULES = frozenset(
    {
        # clocks
        "time",
        "datetime",
        "sched",
        # entropy
        "secrets",
        "uuid",
        # operating system and I/O
        "os",
        "io",
        "pathlib",
        "shutil",
        "tempfile",
        "glob",
        "fileinput",
        "signal",
        "sqlite3",
        "socket",
        "ssl",
        "select",
        "selectors",
        "urllib",
        "http",
        "ftplib",
        "smtplib",
        "subprocess",
        # concurrency and async runtimes
        "asyncio",
        "anyio",
        "trio",
        "threading",
        "_thread",
        "multiprocessing",
        "concurrent",
        "queue",
        # logging
        "logging",
        # dynamic imports would bypass this scan
        "importlib",
    }
)

# Builtins that do I/O or defeat the scan when called (`__import__` is refused wherever it appears).
BANNED_CALLS = frozenset({"open", "print", "input", "breakpoint", "exec", "eval", "compile"})

# The only third-party distributions the core may import (DESIGN §2: "runtime dependency: attrs").
ALLOWED_THIRD_PARTY = frozenset({"attrs", "attr", "presence_core"})

# `random.Random` is allowed as a type (the core takes an injected rng); nothing else of `random`.
ALLOWED_RANDOM_NAMES = frozenset({"Random"})


class Violation(NamedTuple):
    filename: str
    lineno: int
    message: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno}: {self.message}"


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _check_module(module: str, filename: str, lineno: int) -> list[Violation]:
    top = _top(module)
    if top in BANNED_MODULES:
        return [Violation(filename, lineno, f"imports banned module {module!r}")]
    if top != "random" and top not in sys.stdlib_module_names and top not in ALLOWED_THIRD_PARTY:
        return [Violation(filename, lineno, f"imports third-party module {module!r}")]
    return []


def find_impurities(source: str, filename: str = "<string>") -> list[Violation]:
    """Every impure construct in ``source``, in line order."""
    tree = ast.parse(source, filename=filename)
    found: list[Violation] = []
    random_aliases: set[str] = set()

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.extend(_check_module(alias.name, filename, node.lineno))
                if alias.name == "random":
                    random_aliases.add(alias.asname or "random")
                elif _top(alias.name) == "random":
                    found.append(Violation(filename, node.lineno, f"imports {alias.name!r}"))
        elif isinstance(node, ast.ImportFrom):
            if node.level > 0 or node.module is None:
                continue  # relative import: another module of the package, scanned on its own
            found.extend(_check_module(node.module, filename, node.lineno))
            if _top(node.module) == "random":
                for alias in node.names:
                    if node.module != "random" or alias.name not in ALLOWED_RANDOM_NAMES:
                        found.append(
                            Violation(
                                filename,
                                node.lineno,
                                f"imports {alias.name!r} from {node.module!r}: "
                                "use an injected random.Random",
                            )
                        )
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in BANNED_CALLS:
                found.append(Violation(filename, node.lineno, f"calls {node.func.id}()"))
        elif isinstance(node, ast.Name) and node.id == "__import__":
            found.append(Violation(filename, node.lineno, "uses __import__"))

    if random_aliases:
        # Names of the `random` module are fine only as the object of `.Random`.
        allowed_uses: set[int] = set()
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in random_aliases
            ):
                allowed_uses.add(id(node.value))
                if node.attr not in ALLOWED_RANDOM_NAMES:
                    found.append(
                        Violation(
                            filename,
                            node.lineno,
                            f"uses {node.value.id}.{node.attr}: use an injected random.Random",
                        )
                    )
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Name)
                and node.id in random_aliases
                and id(node) not in allowed_uses
            ):
                found.append(
                    Violation(filename, node.lineno, f"uses the random module as {node.id!r}")
                )

    return sorted(found, key=lambda v: (v.lineno, v.message))


# --------------------------------------------------------------------------- the scanner itself

SCANNER_CATCHES = {
    "import time": "import time\n",
    "import time as alias": "import time as t\n",
    "from datetime": "from datetime import datetime\n",
    "os.urandom": "from os import urandom\n",
    "dotted asyncio": "import asyncio.tasks\n",
    "logging": "import logging\nlog = logging.getLogger(__name__)\n",
    "threading": "import threading\n",
    "secrets": "import secrets\n",
    "socket": "import socket\n",
    "urllib": "from urllib.request import urlopen\n",
    "random.random": "import random\nx = random.random()\n",
    "random.shuffle aliased": "import random as r\nr.shuffle([])\n",
    "random.seed": "import random\nrandom.seed(0)\n",
    "from random import choice": "from random import choice\n",
    "random module passed around": "import random\nrng = random\n",
    "open": "data = open('f').read()\n",
    "print": "print('hello')\n",
    "input": "name = input()\n",
    "__import__": "m = __import__('ti' + 'me')\n",
    "third party": "import numpy\n",
    "third party from": "from typing_extensions import Self\n",
    "nested in a function": "def f() -> None:\n    import time\n",
    "under TYPE_CHECKING": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import os\n",
}

SCANNER_ALLOWS = {
    "future": "from __future__ import annotations\n",
    "stdlib": "import math\nfrom collections.abc import Mapping\nfrom typing import NamedTuple\n",
    "attrs": "import attrs\nfrom attr import frozen\n",
    "relative": "from ._errors import LocalProtocolError\nfrom . import _vclock\n",
    "random.Random type": "import random\n\ndef f(rng: random.Random) -> int:\n    return 1\n",
    "from random import Random": "from random import Random\nrng: Random\n",
    "rng methods": "def f(rng: object) -> None:\n    rng.random()\n    rng.shuffle([])\n",
    "sys": "import sys\nif sys.version_info >= (3, 11):\n    pass\n",
}


@pytest.mark.parametrize("source", SCANNER_CATCHES.values(), ids=SCANNER_CATCHES.keys())
def test_scanner_reports_impure_source(source: str) -> None:
    assert find_impurities(source), f"the scanner missed:\n{source}"


def test_scanner_reports_import_time_with_its_line() -> None:
    source = "from __future__ import annotations\n\nimport math\nimport time\n"
    assert find_impurities(source, "fake.py") == [
        Violation("fake.py", 4, "imports banned module 'time'")
    ]


@pytest.mark.parametrize("source", SCANNER_ALLOWS.values(), ids=SCANNER_ALLOWS.keys())
def test_scanner_accepts_pure_source(source: str) -> None:
    assert find_impurities(source) == []


# --------------------------------------------------------------------------- the real package

PACKAGE_DIR = Path(presence_core.__file__).parent
CORE_MODULES = sorted(PACKAGE_DIR.rglob("*.py"))


def test_the_scan_sees_the_package() -> None:
    names = {path.name for path in CORE_MODULES}
    assert {"__init__.py", "_errors.py", "_state.py", "_vclock.py"} <= names


@pytest.mark.parametrize(
    "path", CORE_MODULES, ids=[str(p.relative_to(PACKAGE_DIR)) for p in CORE_MODULES]
)
def test_core_module_is_pure(path: Path) -> None:
    violations = find_impurities(path.read_text(encoding="utf-8"), str(path))
    assert not violations, "presence_core must stay pure:\n" + "\n".join(map(str, violations))


# --------------------------------------------------------------------------- at import time

_PROBE = """
import sys
import attrs, attr  # the core's one dependency: what it loads is not the core's doing
if sys.argv[1]:
    sys.path.insert(0, sys.argv[1])
before = set(sys.modules)
for name in sys.argv[2:]:
    __import__(name)
sys.stdout.write("\\n".join(sorted(set(sys.modules) - before)))
"""


def _newly_loaded(modules: list[str], path: str = "") -> set[str]:
    """Modules that importing ``modules`` loads in a fresh interpreter, after attrs."""
    result = subprocess.run(
        [sys.executable, "-I", "-c", _PROBE, path, *modules],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(result.stdout.split())


def _banned_among(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if _top(m) in BANNED_MODULES)


def _core_module_names() -> list[str]:
    walked = pkgutil.walk_packages(presence_core.__path__, prefix="presence_core.")
    return ["presence_core", *sorted(info.name for info in walked)]


def test_importing_the_core_loads_no_banned_module() -> None:
    names = _core_module_names()
    assert "presence_core._state" in names
    loaded = _newly_loaded(names)
    assert "presence_core._state" in loaded
    assert _banned_among(loaded) == []


def test_import_probe_sees_indirect_imports(tmp_path: Path) -> None:
    # A package whose __init__ looks innocent but loads ftplib through a submodule.
    package = tmp_path / "fakecore"
    package.mkdir()
    (package / "__init__.py").write_text("from . import _inner\n", encoding="utf-8")
    (package / "_inner.py").write_text("import ftplib\n", encoding="utf-8")
    loaded = _newly_loaded(["fakecore"], path=str(tmp_path))
    assert "fakecore._inner" in loaded
    assert "ftplib" in _banned_among(loaded)
