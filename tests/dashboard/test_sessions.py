"""control/dashboard/sessions.py with a fake clock: session expiry, CSRF tokens, and the slowing down of
failed sign-ins."""

from __future__ import annotations

from control.dashboard.sessions import SessionStore, SignInThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_slide_until_their_lifetime_then_end() -> None:
    clock = Clock()
    store = SessionStore(idle=60, lifetime=150, clock=clock)
    token, session = store.create(7)
    assert len(token) >= 43 and token != session.csrf_token
    clock.now += 50
    assert store.get(token) is session  # used: extended to now + 60
    clock.now += 50
    assert store.get(token) is session
    clock.now += 49  # 149 s old: still inside its lifetime
    assert store.get(token) is session
    clock.now += 2  # past the lifetime, however recently used
    assert store.get(token) is None
    assert len(store) == 0


def test_an_idle_session_ends_and_unknown_tokens_are_nobody() -> None:
    clock = Clock()
    store = SessionStore(idle=60, clock=clock)
    token, _ = store.create(1)
    assert store.get("") is None and store.get(None) is None and store.get("forged") is None
    clock.now += 61
    assert store.get(token) is None


def test_csrf_tokens_compare_exactly() -> None:
    store = SessionStore()
    _, session = store.create(1)
    assert session.csrf_matches(session.csrf_token)
    assert not session.csrf_matches(None)
    assert not session.csrf_matches("")
    assert not session.csrf_matches(session.csrf_token[:-1])


def test_signing_out_ends_one_session_or_all_of_a_users() -> None:
    store = SessionStore()
    a, _ = store.create(1)
    b, _ = store.create(1)
    c, _ = store.create(2)
    store.end(a)
    assert store.get(a) is None and store.get(b) is not None
    store.end_user(1)
    assert store.get(b) is None and store.get(c) is not None


def test_the_store_keeps_at_most_its_capacity() -> None:
    store = SessionStore(capacity=2)
    first, _ = store.create(1)
    store.create(2)
    store.create(3)
    assert len(store) == 2 and store.get(first) is None


def test_failed_sign_ins_wait_longer_and_longer() -> None:
    clock = Clock()
    throttle = SignInThrottle(free_failures=3, max_delay=8, clock=clock)
    for _ in range(3):
        throttle.failed("name:alice", "address:10.0.0.1")
        assert throttle.retry_after("name:alice", "address:10.0.0.1") == 0  # three free failures
    throttle.failed("name:alice", "address:10.0.0.1")
    assert throttle.retry_after("name:alice") == 1
    clock.now += 1
    throttle.failed("name:alice")
    assert throttle.retry_after("name:alice") == 2
    for _ in range(5):
        clock.now += 100
        throttle.failed("name:alice")
    assert throttle.retry_after("name:alice") == 8  # capped
    # The address is slowed down on its own account too, whatever name it tries next.
    assert throttle.retry_after("name:bob", "address:10.0.0.1") == 0  # its last failure was long ago
    throttle.succeeded("name:alice")
    assert throttle.retry_after("name:alice") == 0


def test_failures_are_forgotten_after_a_quiet_hour() -> None:
    clock = Clock()
    throttle = SignInThrottle(free_failures=0, forget_after=3600, clock=clock)
    throttle.failed("name:x")
    assert throttle.retry_after("name:x") == 1
    clock.now += 3600
    assert throttle.retry_after("name:x") == 0
    throttle.failed("name:x")
    assert throttle.retry_after("name:x") == 1  # counting starts again
