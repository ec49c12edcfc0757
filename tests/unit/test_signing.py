"""Signing of blobs that cross Redis: envelope, rejections, key rotation, secret loading."""

from __future__ import annotations

import logging
import os
import pickle
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

import graflow
from graflow.exceptions import ConfigError, PoisonMessage, RejectedBlob
from graflow.redis import signing
from graflow.redis.signing import Signer, default_secret_path, load_secret, signer_for

SECRET = b"correct horse battery staple 42"
OTHER = b"another secret of enough length"


class Canary:
    """Unpickling this creates a file: proof that a blob was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty XDG config home, so tests never touch the real ~/.config."""
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


def _reject(signer: Signer, blob: bytes) -> RejectedBlob:
    with pytest.raises(RejectedBlob) as caught:
        signer.verify(blob)
    return caught.value


def test_sign_then_verify_returns_the_payload() -> None:
    signer = Signer(SECRET)
    blob = signer.sign(b"payload")
    assert blob.endswith(b"payload")
    assert signer.verify(blob) == b"payload"
    assert signer.verify(bytearray(blob)) == b"payload"
    assert signer.verify(signer.sign(b"")) == b""


def test_dumps_loads_round_trip_exactly() -> None:
    signer = Signer(SECRET)
    value = {"t": (1, 2), "s": {3}, "f": 0.1, "b": b"\x00", "n": None}
    assert signer.loads(signer.dumps(value)) == value
    assert type(signer.loads(signer.dumps((1,)))) is tuple


@pytest.mark.parametrize(
    ("blob", "reason", "text"),
    [
        (pickle.dumps({"a": 1}), "unsigned", "unsigned"),
        (b"", "unsigned", "unsigned"),
        (b"GFS\x01", "truncated", "truncated"),
    ],
)
def test_unsigned_and_short_blobs_are_rejected(blob: bytes, reason: str, text: str) -> None:
    error = _reject(Signer(SECRET), blob)
    assert isinstance(error, PoisonMessage)
    assert error.reason == reason
    assert text in str(error)


def test_a_blob_cut_short_inside_its_mac_is_truncated() -> None:
    blob = Signer(SECRET).sign(b"payload")
    assert _reject(Signer(SECRET), blob[:20]).reason == "truncated"


def test_a_forged_or_foreign_blob_is_a_bad_signature() -> None:
    signer = Signer(SECRET)
    foreign = Signer(OTHER).sign(b"payload")
    error = _reject(signer, foreign)
    assert error.reason == "signature"
    assert "bad signature (forged or signed with another secret)" in str(error)
    tampered = bytearray(signer.sign(b"payload"))
    tampered[-1] ^= 1
    assert _reject(signer, bytes(tampered)).reason == "signature"
    assert _reject(signer, signer.sign(b"payload")[:-1]).reason == "signature"


def test_an_unknown_envelope_format_is_named() -> None:
    blob = bytearray(Signer(SECRET).sign(b"x"))
    blob[3] = 9
    error = _reject(Signer(SECRET), bytes(blob))
    assert error.reason == "format"
    assert "format 9" in str(error)


def test_version_skew_names_both_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = Signer(SECRET)
    monkeypatch.setattr(signing, "_HEADER", signing._make_header((3, 99), "9.9.9"))
    blob = signer.sign(b"payload")
    monkeypatch.undo()
    error = _reject(signer, blob)
    assert error.reason == "version"
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert str(error) == (
        f"version skew: made by Python 3.99 / graflow 9.9.9, "
        f"this is Python {here} / graflow {graflow.__version__}"
    )


def test_forged_pickles_are_never_unpickled(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    evil = pickle.dumps(Canary(canary))
    signer = Signer(SECRET)
    for blob in (evil, Signer(OTHER).sign(evil), signer.sign(evil)[:-3] + b"..."):
        with pytest.raises(PoisonMessage):
            signer.loads(blob)
    assert not canary.exists()
    signer.loads(signer.sign(evil))  # the same pickle, properly signed, is trusted
    assert canary.exists()


def test_rotation_verifies_old_secrets_and_signs_with_the_new_one() -> None:
    old = Signer(OTHER)
    rotated = Signer(SECRET, previous=[OTHER])
    assert rotated.verify(old.sign(b"old")) == b"old"
    fresh = rotated.sign(b"new")
    assert Signer(SECRET).verify(fresh) == b"new"
    assert _reject(old, fresh).reason == "signature"


def test_a_pickled_signer_carries_no_secret_and_comes_back() -> None:
    signer = Signer(SECRET, previous=[OTHER])
    data = pickle.dumps(signer)
    assert SECRET not in data
    assert OTHER not in data
    again = pickle.loads(data)
    assert again.verify(signer.sign(b"x")) == b"x"
    assert again.key_id == signer.key_id


def test_an_unknown_key_id_falls_back_to_the_default_secret_file(config_home: Path) -> None:
    secret = load_secret()
    key_id = Signer(secret).key_id
    signing._signers.pop(key_id)
    assert signer_for(key_id).verify(Signer(secret).sign(b"x")) == b"x"
    with pytest.raises(ConfigError, match="no signing secret with key id"):
        signer_for("0000000000000000")


def test_explicit_secret_wins_over_file_and_default(tmp_path: Path, config_home: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from the file, long enough\n")
    secret_file.chmod(0o600)
    assert load_secret("given directly, long enough", secret_file) == b"given directly, long enough"
    assert load_secret(b"given as bytes, long enough") == b"given as bytes, long enough"
    assert load_secret(None, secret_file) == b"from the file, long enough"
    assert not default_secret_path().exists()


def test_default_secret_file_is_created_private_and_reused(config_home: Path) -> None:
    path = default_secret_path()
    assert path == config_home / "graflow" / "secret"
    with pytest.raises(ConfigError, match="no signing secret"):
        load_secret(create_default=False)
    secret = load_secret()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(secret) == 64 and bytes.fromhex(secret.decode())
    assert load_secret() == secret
    assert load_secret(create_default=False) == secret
    assert [p.name for p in path.parent.iterdir()] == ["secret"]


def test_default_path_without_xdg_is_under_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert default_secret_path() == Path.home() / ".config" / "graflow" / "secret"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")
    assert default_secret_path() == Path.home() / ".config" / "graflow" / "secret"


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_secret_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET)
    secret_file.chmod(mode)
    with pytest.raises(ConfigError, match="chmod 600") as caught:
        load_secret(secret_file=secret_file)
    assert SECRET.decode() not in str(caught.value)


def test_short_missing_and_odd_secrets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="too short"):
        load_secret("short")
    with pytest.raises(ConfigError, match="too short"):
        Signer(b"x" * 15)
    with pytest.raises(ConfigError, match="must be bytes"):
        Signer("a str secret, long enough")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cannot read secret file"):
        load_secret(secret_file=tmp_path / "missing")


def test_secrets_never_appear_in_messages_reprs_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    short = "tiny-secret"
    texts: list[str] = []
    readable = tmp_path / "readable"
    readable.write_bytes(SECRET)
    readable.chmod(0o644)
    short_file = tmp_path / "short"
    short_file.write_text(short)
    short_file.chmod(0o600)
    signer = Signer(SECRET, previous=[OTHER])
    for attempt in (
        lambda: load_secret(short),
        lambda: load_secret(secret_file=readable),
        lambda: load_secret(secret_file=short_file),
        lambda: signer.verify(Signer(OTHER + b"!").sign(b"x")),
        lambda: signer.verify(b"GFS"),
    ):
        with pytest.raises((ConfigError, PoisonMessage)) as caught:
            attempt()
        texts += [str(caught.value), repr(caught.value)]
    texts += [repr(signer), str(signer), caplog.text]
    for text in texts:
        for secret in (SECRET.decode(), OTHER.decode(), short):
            assert secret not in text


def test_an_envelope_and_its_payload_are_the_signed_blob() -> None:
    signer = Signer(SECRET)
    payload = pickle.dumps({"value": b"x" * 100_000})
    blob = signer.envelope(memoryview(payload)) + payload
    assert blob == signer.sign(payload)
    assert signer.loads(blob) == {"value": b"x" * 100_000}
    assert signer.verify(blob) == payload
    assert type(signer.verify(blob)) is bytes
