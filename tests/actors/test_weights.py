"""The WeightStore version protocol on a real (small, local) Ray: what keeps rollout on-policy at staleness 0.

publish must be newer than what the store holds; wait_for blocks until the version it asks for exists and
then returns the latest (version, refs); latest reports the version without blocking.
"""
from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.slow


def test_publish_must_be_newer_and_latest_reports_it(ray_local):
    from actors.weights import WeightStore

    ray = ray_local
    store = WeightStore.remote(3)
    assert ray.get(store.latest.remote()) == 3
    for stale in (3, 2):
        with pytest.raises(ray.exceptions.RayTaskError, match=f"weight version {stale} is not newer than 3"):
            ray.get(store.publish.remote(stale, []))
    ref = ray.put({"w": 1})
    ray.get(store.publish.remote(5, [ref]))
    assert ray.get(store.latest.remote()) == 5
    version, refs = ray.get(store.wait_for.remote(4))  # already there: returns at once, the latest
    assert version == 5 and ray.get(refs[0]) == {"w": 1}
    ray.kill(store)


def test_wait_for_blocks_until_the_version_is_published(ray_local):
    from actors.weights import WeightStore

    ray = ray_local
    store = WeightStore.remote(0)
    waiting = store.wait_for.remote(2)
    ready, _ = ray.wait([waiting], timeout=1.0)
    assert not ready  # version 0 < 2: still blocked
    ray.get(store.publish.remote(1, [ray.put("v1")]))
    ready, _ = ray.wait([waiting], timeout=1.0)
    assert not ready  # 1 < 2: still blocked
    t0 = time.monotonic()
    ray.get(store.publish.remote(2, [ray.put("v2")]))
    version, refs = ray.get(waiting, timeout=30)
    assert version == 2 and ray.get(refs[0]) == "v2" and time.monotonic() - t0 < 10
    # a bounded wait that cannot be satisfied ends with a timeout, not a hang
    with pytest.raises(ray.exceptions.RayTaskError, match="TimeoutError"):
        ray.get(store.wait_for.remote(9, timeout_s=0.5), timeout=30)
    ray.kill(store)


def test_get_or_create_store_returns_the_named_singleton(ray_local):
    from actors.weights import get_or_create_store

    ray = ray_local
    first = get_or_create_store(7)
    again = get_or_create_store(0)  # same name: the existing store, its version untouched
    assert ray.get(again.latest.remote()) == 7
    ray.get(first.publish.remote(8, []))
    assert ray.get(again.latest.remote()) == 8
    ray.kill(first)
