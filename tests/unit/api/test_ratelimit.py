"""Token buckets and the client address behind trusted proxies (units; the routes are tested
against the real backend in tests/integration/test_access_control.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from api.ratelimit import RateLimiter, client_address


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_one_per_interval() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert [limiter.hit("upload", "a", 3) for _ in range(3)] == [None, None, None]
    wait = limiter.hit("upload", "a", 3)
    assert wait == pytest.approx(20.0)  # 3 a minute: one token every 20 s
    clock.now += 19.0
    assert limiter.hit("upload", "a", 3) is not None
    clock.now += 1.5
    assert limiter.hit("upload", "a", 3) is None
    assert limiter.hit("upload", "b", 3) is None  # another client has its own bucket
    assert limiter.hit("feedback", "a", 3) is None  # and another route too


def test_zero_means_unlimited_and_memory_is_bounded() -> None:
    limiter = RateLimiter(Clock(), max_clients=10)
    assert all(limiter.hit("predict", "a", 0) is None for _ in range(1000))
    for i in range(100):
        limiter.hit("predict", f"client-{i}", 5)
    assert len(limiter._buckets) == 10


def request(peer: str, xff: str | None = None) -> SimpleNamespace:
    headers = {"x-forwarded-for": xff} if xff else {}
    return SimpleNamespace(client=SimpleNamespace(host=peer), headers=headers)


TRUSTED = ["10.0.0.0/8", "127.0.0.1/32"]


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("203.0.113.7", None, "203.0.113.7"),  # direct client
        ("203.0.113.7", "198.51.100.1", "203.0.113.7"),  # an untrusted peer cannot choose its key
        ("10.0.0.5", "198.51.100.1", "198.51.100.1"),  # our proxy's word is taken
        ("10.0.0.5", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # a forged entry left of the proxy's is ignored
        ("10.0.0.6", "198.51.100.1, 10.0.0.5", "198.51.100.1"),  # proxy -> Streamlit -> backend
        ("127.0.0.1", None, "127.0.0.1"),  # a trusted peer without the header is itself the client
    ],
)
def test_client_address(peer, xff, expected) -> None:
    assert client_address(request(peer, xff), TRUSTED) == expected
