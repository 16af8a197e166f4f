"""Accounts (QUANDA_AUTH=accounts): users, their passwords, login sessions and API tokens, in the store.

- A user is a record of kind "user" keyed by their lowercase name: `{"name", "workspace", "password"}`;
  the password is kept as scrypt (memory-hard: n=2**14, r=8, p=1) of a random salt, never logged.
- A login session is a record of kind "login" keyed by a random id the signed cookie carries; logging in
  makes a new one (the id rotates), logging out deletes it, so an old cookie is worth nothing after.
- An API token is `qk_<id>_<secret>`, shown once; the store keeps only its id and a SHA-256 of it.
- A user may be disabled (`users disable`): they cannot sign in, their sessions end and their tokens are refused
  until `users enable`.
- Whatever revokes access — a password change, a removal, a disabling, a token revoked, a logout — is followed
  by the fact REVOKED ({"owner", "reason"}) on the store's bus, published by whoever did it (a server, or the
  command line in a process of its own): every server then checks the credentials of its open WebSockets and
  event streams of that owner and closes those no longer valid, telling them the reason (app/revocation.py).
- Password checks run in a worker thread when a pool is given (app/hashpool.py); failed logins are slowed
  down by app/throttle.py.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from quanda.core import QuandaError, QuandaStore
from quanda.hashpool import HashPool

USER_KIND = "user"
LOGIN_KIND = "login"
TOKEN_KIND = "api_token"
LOCAL_WORKSPACE = "local"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,39}")
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 2**20, "dklen": 32}
MIN_PASSWORD = 8
SESSION_DAYS = 30

REVOKED = "auth.revoked"  # the fact: {"owner", "reason"}: some credential of `owner` may no longer be valid
PASSWORD_CHANGED = "signed out: your password was changed"
REMOVED = "signed out: your account was removed"
DISABLED = "signed out: your account was disabled"
TOKEN_REVOKED = "signed out: your API token was revoked"
LOGGED_OUT = "signed out: this session was signed out"

Credential = tuple[str, str]  # ("login", login session id) or ("token", token id)


class AccountError(QuandaError):
    """A user or token command that cannot be done; the message says why."""


@dataclass(frozen=True)
class User:
    name: str
    workspace: str
    disabled: bool = False


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
    def __init__(self, store: QuandaStore, pool: HashPool | None = None):
        self.store, self.pool = store, pool

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
        """A new password; every login session of the user ends (their API tokens stay valid)."""
        record = await self._record(name)
        self._check_password(password)
        await self.store.put_record(USER_KIND, record["name"], {**record, "password": hash_password(password)})
        await self._end_sessions(record["name"])
        await self._revoked(record, PASSWORD_CHANGED)

    async def remove(self, name: str) -> None:
        record = await self._record(name)
        await self.store.delete_record(USER_KIND, record["name"])
        await self._end_sessions(record["name"], TOKEN_KIND)
        await self._revoked(record, REMOVED)

    async def disable(self, name: str) -> None:
        """The user can no longer sign in; their sessions end, their tokens are refused until `enable`."""
        record = await self._record(name)
        await self.store.put_record(USER_KIND, record["name"], {**record, "disabled": True})
        await self._end_sessions(record["name"])
        await self._revoked(record, DISABLED)

    async def enable(self, name: str) -> None:
        record = await self._record(name)
        await self.store.put_record(USER_KIND, record["name"], {k: v for k, v in record.items() if k != "disabled"})

    async def _end_sessions(self, user: str, *also: str) -> None:
        for kind in (LOGIN_KIND, *also):
            for key, value in await self.store.list_records(kind):
                if value.get("user") == user:
                    await self.store.delete_record(kind, key)

    async def _revoked(self, record: dict, reason: str) -> None:
        """Tell every server (after the change is stored): what it has open for this user is checked again."""
        await self.store.publish(REVOKED, {"owner": record["workspace"], "reason": reason})

    async def users(self) -> list[User]:
        return [as_user(r) for _k, r in await self.store.list_records(USER_KIND)]

    async def user(self, name: str) -> User | None:
        try:
            record = await self.store.get_record(USER_KIND, check_name(name))
        except AccountError:
            return None
        return as_user(record) if record else None

    async def active_user(self, name: str) -> User | None:
        """The user, unless removed or disabled."""
        user = await self.user(name)
        return user if user is not None and not user.disabled else None

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

    async def verify(self, name: str, password: str, priority: float = 0.0) -> User | None:
        """The user if the name and password match (the same work either way), else None; AccountError if the
        password is right but the account is disabled. With a pool, the check waits its turn there (PoolBusy
        when too many wait)."""
        try:
            record = await self.store.get_record(USER_KIND, check_name(name))
        except AccountError:
            record = None
        stored = record["password"] if record is not None else _DECOY
        matches = await self.pool.run(password_matches, password or "", stored, priority=priority) \
            if self.pool is not None else password_matches(password or "", stored)
        if record is None or not matches:
            return None
        if record.get("disabled"):
            raise AccountError("this account is disabled: ask whoever runs this server")
        return as_user(record)

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
        return await self.active_user(login["user"])

    async def close_session(self, sid: object, owner: str | None = None) -> None:
        """End a login session (logout); with its `owner`, what it has open on every server is closed too."""
        if isinstance(sid, str) and re.fullmatch(r"[0-9a-f]{32}", sid):
            await self.store.delete_record(LOGIN_KIND, sid)
            if owner is not None:
                await self._revoked({"workspace": owner}, LOGGED_OUT)

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
        await self._revoked(record, TOKEN_REVOKED)

    async def token_user(self, token: str) -> User | None:
        match = re.fullmatch(r"qk_([0-9a-f]{8})_[A-Za-z0-9_-]{20,64}", token or "")
        if match is None:
            return None
        record = await self.store.get_record(TOKEN_KIND, match.group(1))
        if record is None or not hmac.compare_digest(record["hash"], _token_hash(token)):
            return None
        return await self.active_user(record["user"])

    # -- what an open connection was let in with -------------------------------------------------------------

    async def credential_valid(self, owner: str, credential: Credential) -> bool:
        """Whether a credential checked earlier (a login session, a token already matched) still lets its
        holder act for `owner`: not ended, revoked, expired, nor its user removed or disabled."""
        kind, key = credential
        if kind == "login":
            user = await self.session_user(key)
        elif kind == "token" and re.fullmatch(r"[0-9a-f]{8}", key):
            record = await self.store.get_record(TOKEN_KIND, key)
            user = await self.active_user(record["user"]) if record is not None else None
        else:
            return False
        return user is not None and user.workspace == owner


def token_id(token: str) -> str | None:
    """The id part of an API token (`qk_<id>_<secret>`), or None if it is not shaped like one."""
    match = re.fullmatch(r"qk_([0-9a-f]{8})_[A-Za-z0-9_-]{20,64}", token or "")
    return match.group(1) if match else None


def as_user(record: dict) -> User:
    return User(record["name"], record["workspace"], bool(record.get("disabled")))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
