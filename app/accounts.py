"""Accounts (QUANDA_AUTH=accounts): users, their passwords, login sessions and API tokens, in the store.

- A user is a record of kind "user" keyed by their lowercase name: `{"name", "workspace", "password"}`;
  the password is kept as scrypt (memory-hard: n=2**14, r=8, p=1) of a random salt, never logged.
- A login session is a record of kind "login" keyed by a random id the signed cookie carries; logging in
  makes a new one (the id rotates), logging out deletes it, so an old cookie is worth nothing after.
- An API token is `qk_<id>_<secret>`, shown once; the store keeps only its id and a SHA-256 of it.
- Failed logins are slowed down per user and per address (`LoginThrottle`, in each server's memory).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from quanda.core import QuandaError, QuandaStore

USER_KIND = "user"
LOGIN_KIND = "login"
TOKEN_KIND = "api_token"
LOCAL_WORKSPACE = "local"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,39}")
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 2**20, "dklen": 32}
MIN_PASSWORD = 8
SESSION_DAYS = 30


class AccountError(QuandaError):
    """A user or token command that cannot be done; the message says why."""


@dataclass(frozen=True)
class User:
    name: str
    workspace: str


def check_name(name: str) -> str:
    name = (name or "").strip().lower()
    if not NAME_RE.fullmatch(name):
        raise AccountError("a user name is 1 to 40 characters: lowercase letters, digits, '.', '_' and '-'")
    return name


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=salt, **SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str) -> bool:
    try:
        _scheme, salt, _digest = stored.split("$")
        return hmac.compare_digest(hash_password(password, bytes.fromhex(salt)), stored)
    except ValueError:
        return False


# a hash to compare against when the user does not exist, so a wrong name costs the same time as a wrong password
_DECOY = hash_password(secrets.token_hex(8))


class Accounts:
    def __init__(self, store: QuandaStore):
        self.store = store

    # -- users -----------------------------------------------------------------------------------------------

    async def add(self, name: str, password: str) -> User:
        name = check_name(name)
        self._check_password(password)
        user = {"name": name, "workspace": "u-" + secrets.token_hex(8), "password": hash_password(password),
                "created": time.time()}
        if not await self.store.insert_record(USER_KIND, name, user):
            raise AccountError(f"there is already a user named {name!r}")
        return User(name, user["workspace"])

    async def set_password(self, name: str, password: str) -> None:
        record = await self._record(name)
        self._check_password(password)
        await self.store.put_record(USER_KIND, record["name"], {**record, "password": hash_password(password)})
        for key, login in await self.store.list_records(LOGIN_KIND):  # a new password ends every session
            if login.get("user") == record["name"]:
                await self.store.delete_record(LOGIN_KIND, key)

    async def remove(self, name: str) -> None:
        record = await self._record(name)
        await self.store.delete_record(USER_KIND, record["name"])
        for kind in (LOGIN_KIND, TOKEN_KIND):
            for key, value in await self.store.list_records(kind):
                if value.get("user") == record["name"]:
                    await self.store.delete_record(kind, key)

    async def users(self) -> list[User]:
        return [User(r["name"], r["workspace"]) for _k, r in await self.store.list_records(USER_KIND)]

    async def user(self, name: str) -> User | None:
        try:
            record = await self.store.get_record(USER_KIND, check_name(name))
        except AccountError:
            return None
        return User(record["name"], record["workspace"]) if record else None

    async def _record(self, name: str) -> dict:
        record = await self.store.get_record(USER_KIND, check_name(name))
        if record is None:
            raise AccountError(f"there is no user named {name!r}")
        return record

    @staticmethod
    def _check_password(password: str) -> None:
        if not isinstance(password, str) or len(password) < MIN_PASSWORD:
            raise AccountError(f"a password has at least {MIN_PASSWORD} characters")

    # -- logging in ------------------------------------------------------------------------------------------

    async def verify(self, name: str, password: str) -> User | None:
        """The user if the name and password match (the same work either way), else None."""
        try:
            record = await self.store.get_record(USER_KIND, check_name(name))
        except AccountError:
            record = None
        if record is None:
            password_matches(password or "", _DECOY)
            return None
        return User(record["name"], record["workspace"]) if password_matches(password or "", record["password"]) \
            else None

    async def open_session(self, user: User) -> str:
        """A new login session for `user`; its id goes in the signed cookie."""
        sid = secrets.token_hex(16)
        await self.store.put_record(LOGIN_KIND, sid, {"user": user.name, "expires": time.time() + SESSION_DAYS * 86400})
        return sid

    async def session_user(self, sid: object) -> User | None:
        if not isinstance(sid, str) or not re.fullmatch(r"[0-9a-f]{32}", sid):
            return None
        login = await self.store.get_record(LOGIN_KIND, sid)
        if login is None or login["expires"] < time.time():
            return None
        return await self.user(login["user"])

    async def close_session(self, sid: object) -> None:
        if isinstance(sid, str) and re.fullmatch(r"[0-9a-f]{32}", sid):
            await self.store.delete_record(LOGIN_KIND, sid)

    # -- API tokens ------------------------------------------------------------------------------------------

    async def create_token(self, name: str, label: str = "") -> tuple[str, str]:
        """(token id, the token itself: shown once, kept only as a hash)."""
        record = await self._record(name)
        token_id = secrets.token_hex(4)
        token = f"qk_{token_id}_{secrets.token_urlsafe(24)}"
        await self.store.put_record(TOKEN_KIND, token_id, {"user": record["name"], "label": label[:80],
                                                           "hash": _token_hash(token), "created": time.time()})
        return token_id, token

    async def tokens(self, name: str) -> list[dict]:
        record = await self._record(name)
        return [{"id": key, "label": value["label"], "created": value["created"]}
                for key, value in await self.store.list_records(TOKEN_KIND) if value["user"] == record["name"]]

    async def revoke_token(self, name: str, token_id: str) -> None:
        record = await self._record(name)
        token = await self.store.get_record(TOKEN_KIND, token_id) if re.fullmatch(r"[0-9a-f]{8}", token_id) else None
        if token is None or token["user"] != record["name"]:
            raise AccountError(f"{name} has no token {token_id!r}")
        await self.store.delete_record(TOKEN_KIND, token_id)

    async def token_user(self, token: str) -> User | None:
        match = re.fullmatch(r"qk_([0-9a-f]{8})_[A-Za-z0-9_-]{20,64}", token or "")
        if match is None:
            return None
        record = await self.store.get_record(TOKEN_KIND, match.group(1))
        if record is None or not hmac.compare_digest(record["hash"], _token_hash(token)):
            return None
        return await self.user(record["user"])


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LoginThrottle:
    """Failed logins slow down the next attempts, per user name and per address: past a number of free
    failures (3 for a user name, 20 for an address, which many people may share), each further attempt must
    wait twice as long as the last (1 s, 2 s, 4 s … up to MAX_WAIT_S). Forgotten after an hour of quiet."""

    FREE = {"user": 3, "addr": 20}
    MAX_WAIT_S = 300.0
    FORGET_S = 3600.0

    def __init__(self) -> None:
        self._failures: dict[str, tuple[int, float]] = {}

    def wait_s(self, *keys: str) -> float:
        """Seconds before another attempt is allowed for these keys ("user:…", "addr:…"); 0: now."""
        now = time.monotonic()
        waits = []
        for key in keys:
            count, last = self._failures.get(key, (0, 0.0))
            free = self.FREE[key.split(":", 1)[0]]
            if count >= free and now - last < self.FORGET_S:
                waits.append(last + min(2 ** (count - free), self.MAX_WAIT_S) - now)
        return max([0.0, *waits])

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        for key in keys:
            count, last = self._failures.get(key, (0, 0.0))
            self._failures[key] = (1 if now - last > self.FORGET_S else count + 1, now)
        if len(self._failures) > 10_000:  # bounded: forget the oldest
            for key, _ in sorted(self._failures.items(), key=lambda kv: kv[1][1])[:5_000]:
                del self._failures[key]

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)
