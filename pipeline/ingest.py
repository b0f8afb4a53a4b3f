"""How the rollout stream is handed to the Ray Train workers.

Ray Train's default ``DataConfig`` splits a dataset with ``streaming_split(equal=True)``, which
holds rows back until it can guarantee every worker the same total. For a stream whose next rows
only exist after the workers finish the current step (on-policy RL), that buffer deadlocks. Each
worker here takes a fixed number of rollout shards per step, and rows are dispatched as soon as a
worker asks for them (``equal=False``): the same step structure, no hold-back.

The stream is also *ordered* (``preserve_order``): shards leave every stage in shard order. A rollout actor
given a shard of step s + 1 before the shard of step s would wait for weights of version s + 1, which the
trainer publishes only after training on the shard of step s: both wait until their timeouts. Without the
option Ray Data may hand blocks on in completion order, and after a worker-group restart (a new stream, new
rollout actors, the weight store reset to the checkpoint's version) that is what stalled a run.
"""
from __future__ import annotations

from ray.train import DataConfig


class RolloutStreamConfig(DataConfig):
    """``DataConfig`` that splits ``rollouts`` without the equalising buffer (see module docstring)."""

    def __init__(self, name: str = "rollouts"):
        super().__init__(datasets_to_split=[name], enable_shard_locality=False)
        self.name = name

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        output = [{} for _ in range(world_size)]
        ds = datasets[self.name].copy(datasets[self.name])
        options = self._resolve_execution_options(self.name)
        options.preserve_order = True  # shards in step order: see module docstring
        ds.context.execution_options = options
        for i, split in enumerate(ds.streaming_split(world_size, equal=False)):
            output[i][self.name] = split
        return output
