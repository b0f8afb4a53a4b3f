"""The prompt stream: read prompts with Ray Data, normalise them, and cut them into step shards.

1. :func:`inspect_source` checks a parquet/jsonl source (local path or any URI pyarrow
   understands) with pyarrow alone — schema, the configured fields, row count — so a wrong
   column or an empty dataset fails before Ray, vLLM or DeepSpeed start.
2. :func:`read_prompts` reads it with Ray Data and maps every row to ``(uid, prompt_ids, gold)``
   (chat template applied, prompts over ``max_prompt_tokens`` dropped and counted).
3. :func:`shard_stream` builds the dataset the pipeline streams: one row per (step, shard),
   in a seeded per-epoch order, starting from the shard a resumed run has reached, so that
   no prompt is repeated or skipped across a restart.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from core.batch import PromptShard, object_column


class DataError(ValueError):
    """A problem with the training data; the message names the source and the field/row."""


@dataclass(frozen=True)
class SourceInfo:
    uri: str
    format: str
    num_rows: int


def _format_of(uri: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    lowered = uri.lower().rstrip("/")
    if lowered.endswith((".jsonl", ".json", ".jsonl.gz")):
        return "jsonl"
    return "parquet"


def _field_type(schema, dotted: str):
    """Arrow type of a dotted field path (``reward_model.ground_truth``) or None if absent."""
    import pyarrow as pa

    head, *rest = dotted.split(".")
    if head not in schema.names:
        return None
    typ = schema.field(head).type
    for part in rest:
        if not pa.types.is_struct(typ) or typ.get_field_index(part) < 0:
            return None
        typ = typ.field(part).type
    return typ


def inspect_source(uri: str, fmt: str, prompt_key: str, answer_key: str) -> SourceInfo:
    """Validate a prompt source with pyarrow; raises :class:`DataError` naming what is wrong."""
    import pyarrow.dataset as pads

    fmt = _format_of(uri, fmt)
    try:
        ds = pads.dataset(uri, format="json" if fmt == "jsonl" else "parquet")
        schema = ds.schema
        num_rows = ds.count_rows()
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {fmt} prompts from {uri!r}: {err}") from None
    for role, key in (("data.prompt_key", prompt_key), ("data.answer_key", answer_key)):
        if _field_type(schema, key) is None:
            raise DataError(f"{uri}: field {key!r} (configured as {role}) does not exist; "
                            f"available columns: {schema.names}")
    if num_rows == 0:
        raise DataError(f"{uri}: the dataset is empty (0 rows)")
    return SourceInfo(uri=uri, format=fmt, num_rows=num_rows)


def _get(row: dict, dotted: str):
    value = row
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _messages(prompt, suffix: str) -> list[dict]:
    """Prompt as chat messages: a list of {role, content} is kept, plain text becomes one user turn."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": (prompt + (" " + suffix if suffix else "")).strip()}]
    if isinstance(prompt, np.ndarray):
        prompt = prompt.tolist()
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) and "content" in m for m in prompt):
        return [{"role": str(m.get("role", "user")), "content": str(m["content"])} for m in prompt]
    raise ValueError(f"expected a string or a list of chat messages, got {type(prompt).__name__}")


def _gold(value) -> str:
    if isinstance(value, (list, np.ndarray)):
        value = list(value)
        return str(value[0]) if len(value) == 1 else json.dumps([str(v) for v in value])
    return str(value)


class Normalise:
    """Ray Data callable: raw rows -> ``uid``, ``prompt_ids`` (templated, tokenised), ``gold``."""

    def __init__(self, tokenizer_path: str, prompt_key: str, answer_key: str, suffix: str, max_tokens: int):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(tokenizer_path)
        self.prompt_key, self.answer_key = prompt_key, answer_key
        self.suffix, self.max_tokens = suffix, max_tokens

    def _where(self, row: dict) -> str:
        return f"{row.get('path', '?')}, row with {self.prompt_key}={str(_get(row, self.prompt_key))[:60]!r}"

    def __call__(self, batch: dict) -> dict:
        n = len(next(iter(batch.values())))
        rows = [{k: batch[k][i] for k in batch} for i in range(n)]
        out = {"uid": [], "prompt_ids": [], "gold": []}
        for row in rows:
            answer = _get(row, self.answer_key)
            if answer is None:
                raise DataError(f"{self._where(row)}: field {self.answer_key!r} is missing or null")
            try:
                messages = _messages(_get(row, self.prompt_key), self.suffix)
            except ValueError as err:
                raise DataError(f"{self._where(row)}: field {self.prompt_key!r}: {err}") from None
            text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = self.tok(text, add_special_tokens=False).input_ids
            if len(ids) > self.max_tokens:
                continue
            out["uid"].append(json.dumps(messages, sort_keys=True)[-200:])
            out["prompt_ids"].append(np.asarray(ids, dtype=np.int32))
            out["gold"].append(_gold(answer))
        return {name: object_column(values) for name, values in out.items()}


def _flatten_struct_columns(batch):
    """pyarrow batch -> dict of python lists (structs become dicts), keeping nested fields reachable."""
    return {name: batch.column(name).to_pylist() for name in batch.column_names}


def read_prompts(info: SourceInfo, tokenizer_path: str, prompt_key: str, answer_key: str,
                 suffix: str, max_prompt_tokens: int):
    """Ray Dataset of normalised prompts (``uid``, ``prompt_ids``, ``gold``), materialised."""
    import ray.data

    reader = ray.data.read_json if info.format == "jsonl" else ray.data.read_parquet
    kwargs = {"lines": True} if info.format == "jsonl" else {}
    # small CPU requests throughout: on a 2-core machine a 1-CPU read task would wait behind the actors
    ds = reader(info.uri, include_paths=True, ray_remote_args={"num_cpus": 0.25}, **kwargs)
    ds = ds.map_batches(_flatten_struct_columns, batch_format="pyarrow", num_cpus=0.25)
    ds = ds.map_batches(
        Normalise, fn_constructor_args=(tokenizer_path, prompt_key, answer_key, suffix, max_prompt_tokens),
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.25, batch_size=512,
    )
    return ds.materialize()


def prompt_table(ds) -> dict:
    """Materialised normalised dataset -> column dict of python lists (kept in the object store)."""
    table = {"uid": [], "prompt_ids": [], "gold": []}
    for batch in ds.iter_batches(batch_format="numpy", batch_size=4096):
        table["uid"].extend(batch["uid"].tolist())
        table["prompt_ids"].extend([list(map(int, p)) for p in batch["prompt_ids"]])
        table["gold"].extend(batch["gold"].tolist())
    if not table["uid"]:
        raise DataError("no usable prompts: every prompt is longer than data.max_prompt_tokens or the source is empty")
    return table


def epoch_order(num_rows: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Row order of one epoch: a permutation seeded by (seed, epoch), or identity."""
    if not shuffle:
        return np.arange(num_rows)
    return np.random.default_rng([seed, epoch]).permutation(num_rows)


def refill_rows(num_rows: int, seed: int, shard: int, count: int) -> np.ndarray:
    """Rows of shard ``shard``'s dynamic-sampling reserve: ``count`` rows drawn by a generator seeded
    with (seed, shard), independent of the epoch order, so resume stays exact and the epoch's
    once-per-prompt accounting is untouched (reserve prompts are extra draws, with replacement
    across shards)."""
    rng = np.random.default_rng([seed, shard, 0x5EED])
    return rng.choice(num_rows, size=count, replace=count > num_rows)


class ShardPrompts:
    """Ray Data callable: shard indices -> :class:`PromptShard` rows (prompt positions are global).

    Global prompt position ``q = shard * prompts_per_shard + j`` lies in epoch ``q // N`` at
    offset ``q % N`` of that epoch's seeded order, so shard k always holds the same prompts.
    ``refill_per_shard`` reserve prompts (dynamic sampling) come from :func:`refill_rows`.
    """

    def __init__(self, table, prompts_per_shard: int, shards_per_step: int, seed: int, shuffle: bool,
                 refill_per_shard: int = 0):
        self.table = table
        self.per_shard, self.per_step = prompts_per_shard, shards_per_step
        self.seed, self.shuffle, self.refill = seed, shuffle, refill_per_shard
        self._orders: dict[int, np.ndarray] = {}

    def _row(self, position: int) -> int:
        n = len(self.table["uid"])
        epoch = position // n
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(n, self.seed, epoch, self.shuffle)}
        return int(self._orders[epoch][position % n])

    def __call__(self, batch: dict) -> dict:
        shards = []
        for shard in batch["id"].tolist():
            rows = [self._row(shard * self.per_shard + j) for j in range(self.per_shard)]
            reserve = refill_rows(len(self.table["uid"]), self.seed, shard, self.refill).tolist()
            shards.append(PromptShard(
                step=shard // self.per_step, shard=shard,
                uids=[self.table["uid"][r] for r in rows],
                prompt_ids=[self.table["prompt_ids"][r] for r in rows],
                golds=[self.table["gold"][r] for r in rows],
                refill_prompt_ids=[self.table["prompt_ids"][r] for r in reserve],
                refill_golds=[self.table["gold"][r] for r in reserve],
            ))
        return {"payload": object_column(shards)}


def shard_stream(table_ref, first_shard: int, num_shards: int, prompts_per_shard: int,
                 shards_per_step: int, seed: int, shuffle: bool, refill_per_shard: int = 0):
    """Dataset with one ``payload`` (:class:`PromptShard`) per shard in ``[first_shard, first_shard+num_shards)``."""
    import ray.data

    # from_items: in-memory blocks, so no read task has to claim a whole CPU on a small machine.
    # One shard per block: a rollout task must never hold a finished shard while it waits for the
    # weights of the next one (its output block would not be released: deadlock at staleness 0).
    ids = ray.data.from_items([{"id": first_shard + i} for i in range(num_shards)],
                              override_num_blocks=max(1, num_shards))
    return ids.map_batches(
        ShardPrompts, fn_constructor_args=(table_ref, prompts_per_shard, shards_per_step, seed, shuffle,
                                           refill_per_shard),
        batch_format="numpy", batch_size=1, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.1,
    )
