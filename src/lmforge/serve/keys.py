"""API keys: random secrets shown once, stored only as SHA-256 hashes, each with scopes.

A key is 32 random bytes, so an unsalted hash cannot be reversed by guessing (the same reasoning
as GitHub's tokens); the hash is indexed, so verifying a key is one lookup. Keys live in the
registry's database, so every replica sees a new or revoked key.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from lmforge.errors import LmforgeError
from lmforge.registry.db import as_utc
from lmforge.serve.tables import ApiKeyRow, create_tables

SCOPES = ("predict", "feedback", "admin")
KEY_PREFIX = "lmf_"


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    prefix: str  # the first characters of the secret, to tell keys apart in listings
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: str) -> bool:
        """``admin`` holds every scope."""
        return scope in self.scopes or "admin" in self.scopes

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "scopes": list(self.scopes),
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }

    @classmethod
    def _from_row(cls, row: ApiKeyRow) -> ApiKey:
        return cls(
            id=row.id,
            name=row.name,
            prefix=row.prefix,
            scopes=tuple(row.scopes),
            created_at=as_utc(row.created_at),
            revoked_at=as_utc(row.revoked_at) if row.revoked_at else None,
        )


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_scopes(scopes: list[str]) -> tuple[str, ...]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise LmforgeError(
            f"unknown scope {', '.join(unknown)}" if unknown else "a key needs at least one scope",
            f"choose from {', '.join(SCOPES)}",
        )
    return tuple(s for s in SCOPES if s in scopes)


class KeyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(engine)

    def create(self, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
        """A new key and its secret; the secret is not stored and cannot be shown again."""
        name = name.strip()
        if not name or len(name) > 64:
            raise LmforgeError("a key needs a name of 1 to 64 characters", "pass --name NAME")
        chosen = check_scopes(scopes)
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        with Session(self.engine) as session, session.begin():
            row = ApiKeyRow(
                name=name, prefix=secret[:12], key_hash=hash_key(secret), scopes=list(chosen)
            )
            session.add(row)
            session.flush()
            key = ApiKey._from_row(row)
        return key, secret

    def all(self) -> list[ApiKey]:
        with Session(self.engine) as session:
            rows = session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id))
            return [ApiKey._from_row(r) for r in rows]

    def revoke(self, which: str) -> list[ApiKey]:
        """Revoke the active keys with this name, id or prefix; an error if there are none."""
        with Session(self.engine) as session, session.begin():
            rows = [
                r
                for r in session.scalars(select(ApiKeyRow).where(ApiKeyRow.revoked_at.is_(None)))
                if which in (r.name, str(r.id), r.prefix)
            ]
            if not rows:
                raise LmforgeError(
                    f"no active API key named '{which}'",
                    "give a name, id or prefix from `lmforge keys list`",
                )
            now = datetime.now(UTC)
            for row in rows:
                row.revoked_at = now
            session.flush()
            return [ApiKey._from_row(r) for r in rows]

    def verify(self, secret: str) -> ApiKey | None:
        """The active key with this secret, or None."""
        if not secret.startswith(KEY_PREFIX) or len(secret) > 128:
            return None
        with Session(self.engine) as session:
            row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == hash_key(secret)))
            if row is None or row.revoked_at is not None:
                return None
            return ApiKey._from_row(row)
