"""Sphinx configuration for presence-core's documentation.

Build it with ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (``tox -e docs``).
Every warning is an error, so the API reference cannot silently lose an object.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sphinx.util import inspect as sphinx_inspect

from presence_core import __version__

sys.path.insert(0, str(Path(__file__).parent))

from state_machines import write_all

# The state diagrams and tables are drawn from the code's tables at every build (they are not
# committed): see docs/state_machines.py.
write_all(Path(__file__).parent / "_generated")

# Sphinx 9.0 prints an alias from autodoc_type_aliases (below) as "TypeAliasForwardRef('name')"
# in signatures; printed as its bare name, the signature links it to its documented entry.
sphinx_inspect.TypeAliasForwardRef.__repr__ = lambda self: str(self.name)  # type: ignore[method-assign]

project = "presence-core"
author = "presence-core developers"
copyright = "presence-core developers"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.graphviz",
    "sphinx.ext.napoleon",
]

# The state diagrams (docs/state_machines.py) need Graphviz's ``dot`` (Debian: graphviz).
graphviz_output_format = "svg"

# No intersphinx: the build must work without network access.
nitpicky = False

root_doc = "index"
exclude_patterns = ["_build", "_generated"]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Show the public aliases by name instead of expanding them in every signature.
autodoc_type_aliases = {
    "Meta": "presence_core.Meta",
    "JSONValue": "presence_core.JSONValue",
    "Context": "presence_core.Context",
    "Clock": "presence_core.Clock",
    "PresenceMap": "presence_core.PresenceMap",
    "FetchHook": "presence_adapters.FetchHook",
    "ReplicaEvent": "presence_adapters.ReplicaEvent",
    "TransportFactory": "presence_adapters.testing.TransportFactory",
    "TransportCheck": "presence_adapters.testing.TransportCheck",
    "DriverCheck": "presence_adapters.testing.DriverCheck",
}

# Google style only; "Attributes:" become :ivar: fields so they do not collide with the
# attribute entries autodoc generates for named tuple and attrs fields.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
# "Returns: The joins: ..." is prose, not a type: keep it in one field.
napoleon_use_rtype = False
# Field types come from the signatures; the annotations would spell private module paths.
napoleon_attr_annotations = False
python_use_unqualified_type_names = True

html_theme = "alabaster"
html_theme_options = {
    "description": "Phoenix Presence for Python, as a pure state machine",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []
