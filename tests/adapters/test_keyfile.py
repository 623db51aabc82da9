"""Keyring text (``presence serve --key-file``, ``PRESENCE_KEYRING``, NodeProcess children): it
reads back what it writes, refuses anything else with a message naming the line, and never
quotes a secret."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from presence_adapters import KEYRING_VARIABLE, format_keyring, load_keyring, parse_keyring
from presence_adapters.cli import main, serve_keyring
from presence_core import ConfigurationError, Key, Keyring

SECRET = bytes(range(100, 132))
KEYRING = Keyring(Key("2026-12", SECRET), accepted=(Key("2026-06", b"\x00" * 16),))


def test_the_text_reads_back_as_the_same_keyring() -> None:
    text = format_keyring(KEYRING)
    assert text == f"current 2026-12 {SECRET.hex()}\naccepted 2026-06 {'00' * 16}\n"
    assert parse_keyring(text) == KEYRING
    assert parse_keyring(text.replace("\n", ";")) == KEYRING  # one line, for a variable
    commented = (
        f"# keys\n\n  accepted 2026-06 {'00' * 16}  \ncurrent 2026-12 {SECRET.hex().upper()}"
    )
    assert parse_keyring(commented) == KEYRING  # any order, spaces, comments, upper case


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "has no 'current' key"),
        ("# only a comment", "has no 'current' key"),
        (f"accepted a {SECRET.hex()}", "has no 'current' key"),
        (f"current a {SECRET.hex()}\ncurrent b {SECRET.hex()}", "line 2: a second 'current'"),
        (f"current a {SECRET.hex()} extra", "line 1: expected 'current ID SECRET'"),
        (f"current {SECRET.hex()}", "line 1: expected 'current ID SECRET'"),
        (f"primary a {SECRET.hex()}", "line 1: the role must be 'current' or 'accepted'"),
        (f"current a {SECRET.hex()[:-1]}", "line 1: the secret must be hexadecimal"),
        (f"current a {SECRET.hex()[:-2]}zz", "line 1: the secret must be hexadecimal"),
        (f"current a {SECRET.hex()[:30]}", "line 1: Key.secret is 15 bytes: at least 16"),
        (f"current é {SECRET.hex()}", "line 1: the key id must be 1 to 64 printable ASCII"),
        (f"current {'i' * 65} {SECRET.hex()}", "line 1: the key id must be 1 to 64"),
        (
            f"current a {SECRET.hex()}; accepted a {'00' * 16}",
            "two keys with id 'a' have different secrets",
        ),
    ],
)
def test_anything_else_is_refused_without_quoting_a_secret(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as raised:
        parse_keyring(text)
    assert SECRET.hex()[:20] not in str(raised.value).lower()


def test_ids_the_text_cannot_carry_are_refused_when_written() -> None:
    with pytest.raises(ConfigurationError, match="cannot be written as keyring text"):
        format_keyring(Keyring(Key("a;b", SECRET)))
    with pytest.raises(ConfigurationError, match="cannot be written as keyring text"):
        format_keyring(Keyring(Key("a b", SECRET)))
    with pytest.raises(ConfigurationError, match="keyring must be a Keyring"):
        format_keyring(Key("a", SECRET))  # type: ignore[arg-type]


def test_a_keyring_file(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(format_keyring(KEYRING), encoding="utf-8")
    assert load_keyring(path) == KEYRING
    path.write_text("current a 00\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=f"^{path}, line 1: Key.secret is 1 bytes"):
        load_keyring(path)
    with pytest.raises(FileNotFoundError):
        load_keyring(tmp_path / "missing")


# ---------------------------------------------------------------------- presence serve


def test_serve_reads_the_key_file_or_else_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(format_keyring(KEYRING), encoding="utf-8")
    text = format_keyring(Keyring(Key("env", SECRET)))
    assert serve_keyring(str(path), {}) == KEYRING
    assert serve_keyring(None, {KEYRING_VARIABLE: text}) == Keyring(Key("env", SECRET))
    assert serve_keyring(None, {}) is None
    with pytest.raises(ConfigurationError, match="both --key-file and PRESENCE_KEYRING"):
        serve_keyring(str(path), {KEYRING_VARIABLE: text})
    with pytest.raises(ConfigurationError, match="PRESENCE_KEYRING is set but empty"):
        serve_keyring(None, {KEYRING_VARIABLE: " \n"})
    with pytest.raises(ConfigurationError, match=r"^PRESENCE_KEYRING, line 1"):
        serve_keyring(None, {KEYRING_VARIABLE: "current x 123"})


@pytest.mark.parametrize("problem", ["missing", "invalid", "empty variable", "both"])
def test_serve_stops_before_anything_runs_on_a_keyring_problem(
    problem: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "keys"
    secret = secrets.token_hex(32)
    path.write_text(f"current k {secret[:-1]}\n", encoding="utf-8")  # an odd number of digits
    args = ["serve", "--port", "0"]
    if problem == "missing":
        args += ["--key-file", str(tmp_path / "nowhere")]
    elif problem == "invalid":
        args += ["--key-file", str(path)]
    elif problem == "empty variable":
        monkeypatch.setenv(KEYRING_VARIABLE, "")
    else:
        args += ["--key-file", str(path)]
        monkeypatch.setenv(KEYRING_VARIABLE, f"current k {secret}")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("presence serve: no keyring: ")
    assert secret[:16] not in err


def test_serve_help_names_the_key_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "--key-file PATH" in out
    assert KEYRING_VARIABLE in out
