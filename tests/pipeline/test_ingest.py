"""The rollout stream reaches the train workers in shard order (``pipeline.ingest.RolloutStreamConfig``), even
when a stage finishes its blocks out of order: a rollout actor handed a later step's shard first would wait for
weights the trainer can only publish after the earlier shard (the stall after a worker-group restart)."""
from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.slow


def _reverse_delay(batch: dict) -> dict:
    """Later shards finish first: shard i sleeps (5 - i) * 0.2 s."""
    time.sleep(max(0, 5 - int(batch["id"][0])) * 0.2)
    return batch


def test_shards_arrive_in_order_although_a_stage_finishes_them_out_of_order():
    import ray
    import ray.data

    from pipeline.ingest import RolloutStreamConfig

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="test-ingest")
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        ds = ray.data.from_items([{"id": i} for i in range(6)], override_num_blocks=6)
        ds = ds.map_batches(_reverse_delay, batch_size=1, batch_format="numpy", num_cpus=0.25)
        config = RolloutStreamConfig("rollouts")
        [shard] = config.configure({"rollouts": ds}, world_size=1, worker_handles=None, worker_node_ids=None)
        got = [int(b["id"][0]) for b in shard["rollouts"].iter_batches(batch_size=1, batch_format="numpy",
                                                                       prefetch_batches=0)]
        assert got == list(range(6)), f"shards delivered out of order: {got}"
    finally:
        ray.shutdown()
