"""Passwords, tokens and session cookies: only the configured secrets open the dashboard."""

from __future__ import annotations

import time

import pytest

from dicom_node.config import ConfigError, DashboardSettings, load_settings
from dicom_node.web.auth import Authenticator, Principal, hash_password, verify_password


def test_hash_verifies_only_the_same_password() -> None:
    encoded = hash_password("s3cret-pass", iterations=1000)
    scheme, rounds, salt, digest = encoded.split("$")
    assert (scheme, rounds, len(digest)) == ("pbkdf2_sha256", "1000", 64)
    assert verify_password("s3cret-pass", encoded)
    assert not verify_password("s3cret-pasS", encoded)
    assert hash_password("s3cret-pass", iterations=1000) != encoded, "a fresh salt each time"


@pytest.mark.parametrize("bad", ["", "plain", "md5$1$a$b", "pbkdf2_sha256$x$a$b", "pbkdf2_sha256$0$a$b"])
def test_malformed_hash_never_matches(bad: str) -> None:
    assert not verify_password("anything", bad)


def test_config_refuses_a_password_that_is_not_a_hash(tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("dashboard:\n  users:\n    - {name: bob, password_hash: hunter2}\n")
    with pytest.raises(ConfigError, match=r"dashboard\.users\.0\.password_hash.*hash-password"):
        load_settings(config, environ={})


def _auth(**extra: object) -> Authenticator:
    return Authenticator(
        DashboardSettings.model_validate(
            {
                "users": [{"name": "alice", "password_hash": hash_password("pw-alice-1", iterations=1000)}],
                "tokens": ["tok-1"],
                "session_secret": "s",
                **extra,
            }
        )
    )


def test_login_and_token_identify_the_caller() -> None:
    auth = _auth()
    assert auth.login("alice", "pw-alice-1") == Principal("alice", "user")
    assert auth.login("alice", "wrong") is None
    assert auth.login("nobody", "pw-alice-1") is None
    token = auth.token("tok-1")
    assert token is not None and token.kind == "token" and "tok-1" not in token.actor
    assert auth.token("tok-2") is None


def test_cookie_round_trip_and_tampering() -> None:
    auth = _auth()
    cookie = auth.issue_cookie(Principal("alice", "user"), "session-1")
    assert auth.read_cookie(cookie) == Principal("alice", "user")
    payload, signature = cookie.rsplit(".", 1)
    assert auth.read_cookie(payload + "." + "0" * len(signature)) is None
    assert auth.read_cookie(cookie + "x") is None
    assert _auth(session_secret="other").read_cookie(cookie) is None, "another secret must not accept it"
    assert auth.read_cookie(None) is None and auth.read_cookie("garbage") is None


def test_cookie_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = _auth(session_hours=1)
    cookie = auth.issue_cookie(Principal("alice", "user"), "session-1")
    later = time.time() + 3601
    monkeypatch.setattr(time, "time", lambda: later)
    assert auth.read_cookie(cookie) is None


def test_csrf_token_is_bound_to_the_session() -> None:
    auth = _auth()
    cookie = auth.issue_cookie(Principal("alice", "user"), "session-1")
    assert auth.check_csrf(cookie, auth.csrf_token(cookie))
    assert not auth.check_csrf(cookie, auth.csrf_token("another-session"))
    assert not auth.check_csrf(cookie, None)
