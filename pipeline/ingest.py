"""How the rollout stream is handed to the Ray Train workers.

Ray Train's default ``DataConfig`` splits a dataset with ``streaming_split(equal=True)``, which
holds rows back until it can guarantee every worker the same total. For a stream whose next rows
only exist after the workers finish the current step (on-policy RL), that buffer deadlocks. Each
worker here takes a fixed number of rollout shards per step, and rows are dispatched as soon as a
worker asks for them (``equal=False``): the same step structure, no hold-back.
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
        ds.context.execution_options = self._resolve_execution_options(self.name)
        for i, split in enumerate(ds.streaming_split(world_size, equal=False)):
            output[i][self.name] = split
        return output
