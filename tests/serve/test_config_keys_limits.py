"""The server's config file, API keys in the database, and the token bucket."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from lmforge.errors import LmforgeError, RecipeError
from lmforge.registry import Registry
from lmforge.serve import KeyStore, ServeConfig, load_serve_config
from lmforge.serve.limits import RateLimiter
from lmforge.serve.server import check_bind, is_loopback
from lmforge.serve.tables import ApiKeyRow
from lmforge.settings import Settings


def test_defaults_are_bounded() -> None:
    config = ServeConfig()
    assert config.host == "127.0.0.1" and config.auth.enabled
    assert config.limits.rate_per_second and config.limits.max_body_bytes
    assert config.batching.max_queue >= config.batching.max_batch


def test_config_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text("port: 9000\nbatching: {max_batch: 8, max_wait_ms: 2}\n")
    config = load_serve_config(path, port=9100, host=None)
    assert config.port == 9100 and config.batching.max_batch == 8
    assert config.generation.attention == "kernel"
    path.write_text("generation: {attention: sdpa}\n")
    assert load_serve_config(path).generation.attention == "sdpa"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("batching: {max_bach: 8}\n", "did you mean 'max_batch'"),
        ("batching: {max_batch: 64, max_queue: 8}\n", "max_queue must be at least"),
        ("limits: {max_inputs: 0}\n", "limits.max_inputs"),
        ("port: [\n", "not valid YAML"),
        ("generation: {attention: flash}\n", "generation.attention"),
        ("connections: {max_header_bytes: 10}\n", "connections.max_header_bytes"),
        ("limits: {model_loads_per_minute: 0}\n", "limits.model_loads_per_minute"),
    ],
)
def test_bad_config_is_one_line(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_serve_config(path)
    assert needle in info.value.message and "\n" not in info.value.message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="not found"):
        load_serve_config(tmp_path / "nope.yaml")


def test_keys_are_stored_hashed_and_verified(home: Settings) -> None:
    engine = Registry(home).engine
    store = KeyStore(engine)
    _key, secret = store.create("ci", ["predict", "feedback"])
    assert secret.startswith("lmf_") and len(secret) > 40
    with Session(engine) as session:
        row = session.scalars(select(ApiKeyRow)).one()
    assert secret not in (row.key_hash, row.prefix) and len(row.key_hash) == 64
    found = store.verify(secret)
    assert found is not None and found.name == "ci" and found.scopes == ("predict", "feedback")
    assert found.allows("predict") and not found.allows("admin")
    assert store.verify(secret + "x") is None and store.verify("not-a-key") is None
    (revoked,) = store.revoke("ci")
    assert revoked.revoked_at is not None
    assert store.verify(secret) is None
    assert not store.all()[0].active


def test_admin_holds_every_scope_and_bad_scopes_are_refused(home: Settings) -> None:
    store = KeyStore(Registry(home).engine)
    admin, _ = store.create("ops", ["admin"])
    assert all(admin.allows(s) for s in ("predict", "feedback", "admin"))
    with pytest.raises(LmforgeError, match="unknown scope write"):
        store.create("x", ["write"])
    with pytest.raises(LmforgeError, match="at least one scope"):
        store.create("x", [])
    with pytest.raises(LmforgeError, match="no active API key"):
        store.revoke("nobody")


def test_token_bucket_allows_bursts_then_the_rate() -> None:
    limiter = RateLimiter(rate=10.0, burst=3)
    assert [limiter.check("a") for _ in range(3)] == [None, None, None]
    wait = limiter.check("a")
    assert wait is not None and 0 < wait <= 0.1
    assert limiter.check("b") is None  # buckets are per identity
    assert RateLimiter(rate=None, burst=1).check("a") is None


def test_auth_off_only_on_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    open_config = ServeConfig.model_validate({"host": "0.0.0.0", "auth": {"enabled": False}})
    with pytest.raises(LmforgeError, match="loopback"):
        check_bind(open_config)
