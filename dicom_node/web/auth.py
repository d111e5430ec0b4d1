"""Who is asking: configured users (hashed passwords, signed session cookie), bearer tokens, or anonymous.

Passwords are stored as pbkdf2_sha256$iterations$salt$hash (hex salt and hash, hashlib.pbkdf2_hmac), so the
config file never holds a password; every comparison is constant-time. The session cookie is the user name,
an expiry and a session id, signed with HMAC-SHA256; the session id must also be open in the database
(`sessions.LoginSessions`), which is what lets logout end a session. One password hash runs at a time, so
a login flood occupies at most one core of the dashboard's process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field

from dicom_node.config import DashboardSettings

log = logging.getLogger(__name__)

SCHEME = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 600_000
COOKIE_NAME = "psma_session"
UNSET_SECRET = "change-me"


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: str | None = None) -> str:
    """The config value for a password (what `psma-node dashboard hash-password` prints)."""
    salt = salt or secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"{SCHEME}${iterations}${salt}${digest.hex()}"


def verify_password(password: str, encoded: str) -> bool:
    """True if `password` matches the stored hash; a malformed hash never matches."""
    try:
        scheme, iterations, salt, expected = encoded.split("$")
        rounds = int(iterations)
    except ValueError:
        return False
    if scheme != SCHEME or rounds < 1:
        return False
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), rounds).hex()
    return hmac.compare_digest(digest, expected)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller; `actor` is what audit rows record for its actions."""

    name: str
    kind: str  # "user", "token" or "anonymous"
    session_id: str | None = field(default=None, compare=False, repr=False)

    @property
    def actor(self) -> str:
        return self.name if self.kind == "user" else f"{self.kind}:{self.name}"


class Authenticator:
    """Checks passwords, tokens and cookies against the dashboard settings."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        configured = settings.session_secret.get_secret_value()
        if configured == UNSET_SECRET:
            log.warning(
                "dashboard.session_secret is unset: using a random one, logins end when the node restarts"
            )
            configured = secrets.token_hex(32)
        self._secret = configured.encode()
        self._users = {user.name: user.password_hash.get_secret_value() for user in settings.users}
        self._tokens = [token.get_secret_value() for token in settings.tokens]
        # Unknown users still cost one hash computation, so timing does not reveal which names exist.
        rounds = max((int(h.split("$")[1]) for h in self._users.values()), default=DEFAULT_ITERATIONS)
        self._dummy_hash = f"{SCHEME}${rounds}$unknown-user$00"
        self._hashing = threading.Lock()

    @property
    def allow_anonymous(self) -> bool:
        return self.settings.allow_anonymous

    def login(self, name: str, password: str) -> Principal | None:
        stored = self._users.get(name)
        with self._hashing:
            ok = verify_password(password, stored if stored is not None else self._dummy_hash)
        return Principal(name, "user") if ok and stored is not None else None

    def token(self, presented: str) -> Principal | None:
        """A bearer token; the principal is named by a short digest so the token never reaches the audit."""
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(presented.encode(), token.encode())
        if not matched:
            return None
        return Principal(hashlib.sha256(presented.encode()).hexdigest()[:10], "token")

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self._secret, payload, hashlib.sha256).hexdigest()

    def issue_cookie(self, principal: Principal, session_id: str) -> str:
        expires = int(time.time() + self.settings.session_hours * 3600)
        data = {"u": principal.name, "exp": expires, "sid": session_id}
        payload = base64.urlsafe_b64encode(json.dumps(data).encode())
        return f"{payload.decode()}.{self._sign(payload)}"

    def read_cookie(self, value: str | None) -> Principal | None:
        """The user of a valid, unexpired cookie for a configured user (its session is checked by the app)."""
        if not value or "." not in value:
            return None
        payload, signature = value.rsplit(".", 1)
        if not hmac.compare_digest(self._sign(payload.encode()), signature):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload.encode()))
            name, expires, session_id = str(data["u"]), float(data["exp"]), str(data["sid"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires < time.time() or name not in self._users:
            return None
        return Principal(name, "user", session_id)

    def csrf_token(self, cookie: str) -> str:
        """A per-session token that forms must echo back, so another site cannot post as the user."""
        return self._sign(b"csrf:" + cookie.encode())

    def check_csrf(self, cookie: str | None, presented: str | None) -> bool:
        if not cookie or not presented:
            return False
        return hmac.compare_digest(self.csrf_token(cookie), presented)
