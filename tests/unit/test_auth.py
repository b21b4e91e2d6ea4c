"""API key entries and credential settings: validation, default credentials off loopback, files."""

from __future__ import annotations

import pytest

from idios.auth import KeyRing, hash_key, parse_entry
from idios.config import Settings, default_credential_problems


def test_key_entries_are_validated() -> None:
    assert parse_entry(f"write:{hash_key('x')}") == (hash_key("x"), "write")
    assert parse_entry(f"read {hash_key('x').upper()}") == (hash_key("x"), "read")
    for bad in ("admin:" + hash_key("x"), "read:abc", "write:" + "g" * 64, hash_key("x")):
        with pytest.raises(ValueError):
            parse_entry(bad)
    assert KeyRing.load([], None).open


@pytest.mark.parametrize(
    ("amqp", "milvus", "token", "allowed", "refused"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "http://127.0.0.1:19530", "root:Milvus", False, 0),
        ("amqp://rabbit.internal/", "http://milvus:19530", "", False, 1),
        ("amqp://guest:guest@10.0.0.5:5672/", "http://milvus:19530", "root:Milvus", False, 2),
        ("amqp://idios:s3cret@rabbit:5672/", "http://milvus:19530", "idios:s3cret", False, 0),
        ("amqp://guest:guest@rabbit:5672/", "http://milvus:19530", "root:Milvus", True, 0),
    ],
)
def test_default_credentials_are_refused_off_loopback(amqp, milvus, token, allowed, refused) -> None:
    settings = Settings(
        _env_file=None, amqp_url=amqp, milvus_uri=milvus, milvus_token=token, allow_default_credentials=allowed
    )
    assert len(default_credential_problems(settings, broker=True, milvus=True)) == refused


def test_credentials_can_come_from_files(tmp_path) -> None:
    (tmp_path / "amqp").write_text("amqp://idios:from-file@rabbit:5672/\n")
    (tmp_path / "token").write_text("idios:token-from-file\n")
    settings = Settings(_env_file=None, amqp_url_file=tmp_path / "amqp", milvus_token_file=tmp_path / "token")
    assert settings.amqp_url == "amqp://idios:from-file@rabbit:5672/"
    assert settings.milvus_token == "idios:token-from-file"
