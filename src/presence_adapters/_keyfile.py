"""Keyring text: a :class:`~presence_core.Keyring` as a file or an environment variable.

What ``presence serve --key-file`` reads (and the ``PRESENCE_KEYRING`` variable holds), and how
:class:`~presence_adapters.testing.NodeProcess` hands a keyring to its child. One key per line,
``ROLE ID SECRET``::

    # The cluster's replication keys. Keep this file readable by the service only.
    current  2026-12  9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    accepted 2027-06  60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752

* ``ROLE``: ``current`` on exactly one line (messages are sealed with that key, and it is
  accepted), ``accepted`` on any number (further keys accepted: the next or the previous one
  during a rotation).
* ``ID``: the key's id, 1 to 64 printable ASCII characters with no space and no ``;``. It
  travels in every message: it names the key, it is not secret.
* ``SECRET``: the shared secret in hexadecimal, at least 32 digits (16 bytes); 64 digits
  (32 bytes, ``openssl rand -hex 32``) are recommended.

Lines may also be separated by ``;`` (an environment variable is easier to set on one line).
Blank lines and lines starting with ``#`` are ignored. Every error names the line, never its
content: a secret is never echoed into a log or a terminal.

Rotating keys is two rolls of the cluster (see :class:`~presence_core.Keyring`): first add the
new key as ``accepted`` on every node; then, once every node holds it, swap the two roles.
"""

from __future__ import annotations

import os
import re
from typing import Final

from presence_core import ConfigurationError, InvalidArgument, Key, Keyring

__all__ = ["KEYRING_VARIABLE", "format_keyring", "load_keyring", "parse_keyring"]

KEYRING_VARIABLE: Final = "PRESENCE_KEYRING"
"""The environment variable ``presence serve`` reads a keyring's text from (see
:func:`parse_keyring`), when no ``--key-file`` is given."""

MAX_KEYRING_TEXT: Final = 64 * 1024
"""The longest keyring text accepted, in characters (a keyring holds a few keys)."""

_ID: Final = re.compile(r"[!-~]{1,64}")  # printable ASCII, no space
_HEX: Final = re.compile(r"(?:[0-9a-fA-F]{2})+")


def _entries(text: str) -> list[tuple[int, str]]:
    """The meaningful entries of ``text``, with their 1-based entry numbers."""
    entries = []
    for number, raw in enumerate(re.split(r"[\n;]", text), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            entries.append((number, line))
    return entries


def parse_keyring(text: str, *, source: str = "the keyring") -> Keyring:
    """Read a keyring from its text (the format of this module's docstring).

    Args:
        text: the text.
        source: what to call it in error messages (a file name, a variable name).

    Raises:
        ConfigurationError: the text is not a keyring: no ``current`` key or more than one, an
            entry that is not ``ROLE ID SECRET``, a secret that is not hexadecimal or shorter
            than 16 bytes, an id used twice with different secrets. The message names the
            entry (its line, counting ``;`` as a line break), never its content.
    """
    if type(text) is not str:
        raise ConfigurationError(f"{source} must be text, not {type(text).__name__}")
    if len(text) > MAX_KEYRING_TEXT:
        raise ConfigurationError(f"{source} is longer than {MAX_KEYRING_TEXT} characters")
    current: Key | None = None
    accepted: list[Key] = []
    for number, line in _entries(text):
        where = f"{source}, line {number}"
        fields = line.split()
        if len(fields) != 3:
            raise ConfigurationError(
                f"{where}: expected 'current ID SECRET' or 'accepted ID SECRET', "
                f"found {len(fields)} field(s)"
            )
        role, key_id, secret = fields
        if role not in ("current", "accepted"):
            raise ConfigurationError(f"{where}: the role must be 'current' or 'accepted'")
        if not _ID.fullmatch(key_id):
            raise ConfigurationError(
                f"{where}: the key id must be 1 to 64 printable ASCII characters, no space"
            )
        if not _HEX.fullmatch(secret):
            raise ConfigurationError(
                f"{where}: the secret must be hexadecimal digits, an even number of them"
            )
        try:
            key = Key(key_id, bytes.fromhex(secret))
        except InvalidArgument as exc:
            # The core's messages name the id or the length, never the secret.
            raise ConfigurationError(f"{where}: {exc}") from None
        if role == "accepted":
            accepted.append(key)
        elif current is None:
            current = key
        else:
            raise ConfigurationError(f"{where}: a second 'current' key (there must be one)")
    if current is None:
        raise ConfigurationError(
            f"{source} has no 'current' key (one line 'current ID SECRET' is needed)"
        )
    try:
        return Keyring(current, accepted=tuple(accepted))
    except InvalidArgument as exc:
        raise ConfigurationError(f"{source}: {exc}") from None


def load_keyring(path: str | os.PathLike[str]) -> Keyring:
    """Read a keyring file (UTF-8, the format of this module's docstring).

    Raises:
        ConfigurationError: the file is not a keyring (see :func:`parse_keyring`).
        OSError: the file cannot be read.
    """
    with open(path, encoding="utf-8") as file:
        text = file.read(MAX_KEYRING_TEXT + 1)
    return parse_keyring(text, source=os.fspath(path))


def format_keyring(keyring: Keyring) -> str:
    """The text of ``keyring``, which :func:`parse_keyring` reads back as an equal keyring.

    It holds the secrets: write it only where the secrets may be (a file only the service reads,
    a pipe to a child process), never to a log.

    Raises:
        ConfigurationError: ``keyring`` is not a :class:`~presence_core.Keyring`, or a key id
            cannot be written in the format (it holds a space or a ``;``).
    """
    if not isinstance(keyring, Keyring):
        raise ConfigurationError(f"keyring must be a Keyring, not {type(keyring).__name__}")
    lines = []
    for role, key in (("current", keyring.current), *(("accepted", k) for k in keyring.accepted)):
        if not _ID.fullmatch(key.id) or ";" in key.id:
            raise ConfigurationError(
                f"key id {key.id!r} cannot be written as keyring text (it holds a space or a ';')"
            )
        lines.append(f"{role} {key.id} {key.secret.hex()}")
    return "\n".join(lines) + "\n"
