"""The prompt stream: read prompts with Ray Data, normalise them, and cut them into step shards.

1. :func:`inspect_source` checks a parquet/jsonl source (local path or any URI pyarrow
   understands) with pyarrow alone — schema, the configured fields, and every row's prompt and
   answer (null or NaN answers, invalid UTF-8: an error naming file, row and field; empty answers:
   counted, all empty: an error) — before Ray, vLLM or DeepSpeed start.
2. :func:`read_prompts` reads it with Ray Data and maps every row to ``(uid, prompt_ids, gold)``
   (chat template applied; prompts over ``max_prompt_tokens`` and rows with an empty answer are
   dropped, counted and logged by :func:`prompt_table`).
3. :func:`shard_stream` builds the dataset the pipeline streams: one row per (step, shard),
   in a seeded per-epoch order, starting from the shard a resumed run has reached, so that
   no prompt is repeated or skipped across a restart.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from core.batch import PromptShard, object_column
from core.config import DataConfig


# CPUs each data-stage task/actor asks Ray for: small, so on a 2-core machine they are scheduled beside the
# rollout actors and train workers (pipeline.run.resource_requests checks them against the cluster)
READ_CPUS = 0.25       # the read tasks and the flattening map of read_prompts
NORMALISE_CPUS = 0.25  # the Normalise actor (chat template, tokenisation)
SHARD_CPUS = 0.1       # the ShardPrompts actor, alive for the whole stream


class DataError(ValueError):
    """A problem with the training data; the message names the source and the field/row."""


@dataclass(frozen=True)
class SourceInfo:
    """A checked prompt source: where, which format, how many rows, how many with an empty answer."""

    uri: str
    format: str
    num_rows: int
    empty_answers: int = 0


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


def inspect_source(uri: str, fmt: str, prompt_key: str, answer_key: str, role: str = "data") -> SourceInfo:
    """Validate a prompt source with pyarrow, reading every row's prompt and answer; raises
    :class:`DataError` naming the file, row and field (see module docstring). ``role`` names the config
    section the source belongs to in messages (``data`` or ``heldout``)."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    fmt = _format_of(uri, fmt)
    try:
        ds = pads.dataset(uri, format="json" if fmt == "jsonl" else "parquet")
        schema = ds.schema
        fragments = list(ds.get_fragments())
    except (OSError, ValueError, pa.ArrowException) as err:
        raise DataError(f"cannot read {fmt} prompts from {uri!r} ({role}): {err}") from None
    for key_name, key in (("data.prompt_key", prompt_key), ("data.answer_key", answer_key)):
        if _field_type(schema, key) is None:
            raise DataError(f"{uri}: field {key!r} (configured as {key_name}) does not exist; "
                            f"available columns: {schema.names}")
    num_rows = empty = 0
    for fragment in fragments:
        n, e = _check_rows(fragment, prompt_key, answer_key)
        num_rows, empty = num_rows + n, empty + e
    if num_rows == 0:
        raise DataError(f"{uri}: the dataset is empty (0 rows)")
    if empty == num_rows:
        raise DataError(f"{uri}: field {answer_key!r} (data.answer_key) is empty on every one of its {num_rows} rows: "
                        "every response would get the wrong-answer reward and nothing would be learned")
    return SourceInfo(uri=uri, format=fmt, num_rows=num_rows, empty_answers=empty)


def _column(table, dotted: str):
    """The (possibly nested) field ``a.b.c`` of a pyarrow table as one array."""
    import pyarrow.compute as pc

    head, *rest = dotted.split(".")
    col = table.column(head).combine_chunks()
    for part in rest:
        col = pc.struct_field(col, part)
    return col


def _utf8_error_row(array) -> int | None:
    """Index of the first element of ``array`` whose strings are not valid UTF-8, or None."""
    import pyarrow as pa

    try:
        array.validate(full=True)
        return None
    except pa.ArrowInvalid:
        pass
    for i in range(len(array)):
        try:
            array[i].as_py()
        except UnicodeDecodeError:
            return i
    return None


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _is_empty(value) -> bool:
    if isinstance(value, (list, tuple)):
        return not value or all(_is_missing(v) or not str(v).strip() for v in value)
    return not str(value).strip()


def _check_rows(fragment, prompt_key: str, answer_key: str) -> tuple[int, int]:
    """(rows, rows with an empty answer) of one file; DataError naming file/row/field for a row whose
    prompt or answer is null/NaN or not valid UTF-8 (rows are numbered from 1 within the file)."""
    import pyarrow as pa

    where = fragment.path
    try:
        table = fragment.to_table(columns=sorted({prompt_key.split(".")[0], answer_key.split(".")[0]}))
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{where}: cannot read the rows: {err}") from None
    empty = 0
    for role, key in (("data.prompt_key", prompt_key), ("data.answer_key", answer_key)):
        column = _column(table, key)
        bad = _utf8_error_row(column)
        if bad is not None:
            raise DataError(f"{where}: row {bad + 1}: field {key!r} ({role}) is not valid UTF-8")
        for i, value in enumerate(column.to_pylist()):
            if _is_missing(value):
                raise DataError(f"{where}: row {i + 1}: field {key!r} ({role}) is null or NaN")
            if role == "data.answer_key" and _is_empty(value):
                empty += 1
            if role == "data.prompt_key":
                try:
                    _messages(value, "")
                except ValueError as err:
                    raise DataError(f"{where}: row {i + 1}: field {key!r} ({role}): {err}") from None
    return table.num_rows, empty


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
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                   for m in prompt):
        return [{"role": str(m.get("role", "user")), "content": str(m["content"])} for m in prompt]
    raise ValueError(f"expected a string or a list of chat messages ({{role, content: string}}), got {prompt!r:.80}")


def _gold(value) -> str:
    if isinstance(value, (list, np.ndarray)):
        value = list(value)
        return str(value[0]) if len(value) == 1 else json.dumps([str(v) for v in value])
    return str(value)


def normalise_row(row: dict, tok, prompt_key: str, answer_key: str, suffix: str, max_tokens: int,
                  where: str) -> tuple[str, list[int], str] | str:
    """(uid, prompt_ids, gold) of one raw row, or why it is dropped: ``"too_long"`` (templated prompt over
    ``max_tokens``) or ``"empty_answer"``. A null answer or a malformed prompt raises :class:`DataError`."""
    answer = _get(row, answer_key)
    if _is_missing(answer):
        raise DataError(f"{where}: field {answer_key!r} is missing or null")
    if _is_empty(answer if not isinstance(answer, np.ndarray) else answer.tolist()):
        return "empty_answer"
    try:
        messages = _messages(_get(row, prompt_key), suffix)
    except ValueError as err:
        raise DataError(f"{where}: field {prompt_key!r}: {err}") from None
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False).input_ids
    if len(ids) > max_tokens:
        return "too_long"
    return json.dumps(messages, sort_keys=True)[-200:], list(ids), _gold(answer)


class Normalise:
    """Ray Data callable: raw rows -> ``uid``, ``prompt_ids`` (templated, tokenised), ``gold``, and
    ``dropped`` (why a row is left out: "too_long" / "empty_answer"; "" for kept rows). Reads the fields
    ``data.prompt_key`` / ``data.answer_key``, appends ``data.prompt_suffix`` to plain-text prompts and drops
    prompts over ``data.max_prompt_tokens``."""

    def __init__(self, tokenizer_path: str, data: DataConfig, prompt_key: str | None = None,
                 answer_key: str | None = None):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(tokenizer_path)
        self.prompt_key, self.answer_key = prompt_key or data.prompt_key, answer_key or data.answer_key
        self.suffix, self.max_tokens = data.prompt_suffix, data.max_prompt_tokens

    def _where(self, row: dict) -> str:
        return f"{row.get('path', '?')}, row with {self.prompt_key}={str(_get(row, self.prompt_key))[:60]!r}"

    def __call__(self, batch: dict) -> dict:
        n = len(next(iter(batch.values())))
        rows = [{k: batch[k][i] for k in batch} for i in range(n)]
        out = {"uid": [], "prompt_ids": [], "gold": [], "dropped": []}
        for row in rows:
            result = normalise_row(row, self.tok, self.prompt_key, self.answer_key, self.suffix, self.max_tokens,
                                   self._where(row))
            uid, ids, gold = ("", [], "") if isinstance(result, str) else result
            out["uid"].append(uid)
            out["prompt_ids"].append(np.asarray(ids, dtype=np.int32))
            out["gold"].append(gold)
            out["dropped"].append(result if isinstance(result, str) else "")
        return {name: object_column(values) for name, values in out.items()}


def _flatten_struct_columns(batch):
    """pyarrow batch -> dict of python lists (structs become dicts), keeping nested fields reachable."""
    return {name: batch.column(name).to_pylist() for name in batch.column_names}


def read_prompts(info: SourceInfo, tokenizer_path: str, data: DataConfig, prompt_key: str, answer_key: str):
    """Ray Dataset of normalised prompts (``uid``, ``prompt_ids``, ``gold``, ``dropped``), materialised;
    ``prompt_key`` / ``answer_key``: the source's fields (``pipeline.setup.source_spec``)."""
    import ray.data

    reader = ray.data.read_json if info.format == "jsonl" else ray.data.read_parquet
    kwargs = {"lines": True} if info.format == "jsonl" else {}
    # small CPU requests throughout: on a 2-core machine a 1-CPU read task would wait behind the actors
    ds = reader(info.uri, include_paths=True, ray_remote_args={"num_cpus": READ_CPUS}, **kwargs)
    ds = ds.map_batches(_flatten_struct_columns, batch_format="pyarrow", num_cpus=READ_CPUS)
    ds = ds.map_batches(
        Normalise, fn_constructor_kwargs={"tokenizer_path": tokenizer_path, "data": data, "prompt_key": prompt_key,
                                          "answer_key": answer_key},
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=NORMALISE_CPUS, batch_size=512,
    )
    return ds.materialize()


def prompt_table(ds, max_prompt_tokens: int, log=print) -> dict:
    """Materialised normalised dataset -> column dict of python lists (kept in the object store);
    see :func:`collect_prompts`."""
    return collect_prompts(ds.iter_batches(batch_format="numpy", batch_size=4096), max_prompt_tokens, log)


def collect_prompts(batches, max_prompt_tokens: int, log=print) -> dict:
    """:class:`Normalise` output batches -> ``{"uid", "prompt_ids", "gold"}`` lists of the kept rows.

    Rows :class:`Normalise` dropped are left out, counted, and the counts logged through ``log``;
    ``table["dropped"]`` holds them ({"too_long": n, "empty_answer": m})."""
    table: dict = {"uid": [], "prompt_ids": [], "gold": [], "dropped": {"too_long": 0, "empty_answer": 0}}
    for batch in batches:
        for uid, ids, gold, dropped in zip(batch["uid"], batch["prompt_ids"], batch["gold"], batch["dropped"]):
            if dropped:
                table["dropped"][dropped] += 1
                continue
            table["uid"].append(uid)
            table["prompt_ids"].append(list(map(int, ids)))
            table["gold"].append(gold)
    dropped = table["dropped"]
    if any(dropped.values()):
        log(f"dropped {dropped['too_long']} prompts longer than data.max_prompt_tokens={max_prompt_tokens} tokens "
            f"and {dropped['empty_answer']} rows with an empty answer")
    if not table["uid"]:
        raise DataError(f"no usable prompts: all {sum(dropped.values())} were dropped ({dropped['too_long']} longer "
                        f"than data.max_prompt_tokens={max_prompt_tokens}, {dropped['empty_answer']} with an empty answer)")
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
        import ray

        self.table = ray.get(table) if isinstance(table, ray.ObjectRef) else table
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
        ShardPrompts, fn_constructor_kwargs={
            "table": table_ref, "prompts_per_shard": prompts_per_shard, "shards_per_step": shards_per_step,
            "seed": seed, "shuffle": shuffle, "refill_per_shard": refill_per_shard},
        batch_format="numpy", batch_size=1, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=SHARD_CPUS,
    )
