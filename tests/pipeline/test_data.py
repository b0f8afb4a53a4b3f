"""The prompt reader (parquet/jsonl, nested fields), its errors, and the deterministic shard order."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data import DataError, Normalise, ShardPrompts, epoch_order, inspect_source
from task.synthetic import sample_problems, to_rows
from task.tiny_model import build_tokenizer


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    build_tokenizer(str(path))
    return str(path)


def test_shared_math_train_set_passes_inspection_and_normalises(data_dir, tokenizer_dir):
    uri = str(data_dir / "train" / "math_level3to5.parquet")
    info = inspect_source(uri, "auto", "prompt", "reward_model.ground_truth")
    assert info.format == "parquet" and info.num_rows > 8000
    table = pq.read_table(uri).slice(0, 8)
    out = Normalise(tokenizer_dir, "prompt", "reward_model.ground_truth", "", 100_000)(
        {name: np.asarray(table.column(name).to_pylist() + [None], dtype=object)[:-1] for name in table.column_names})
    golds = [r["reward_model"]["ground_truth"] for r in table.to_pylist()]
    assert list(out["gold"]) == golds
    assert all(len(ids) > 10 for ids in out["prompt_ids"])


def test_missing_column_names_file_and_field(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": "1+1?", "answer": "2"}]), path)
    with pytest.raises(DataError, match=r"bad\.parquet.*'prompt'.*data\.prompt_key"):
        inspect_source(str(path), "auto", "prompt", "answer")
    with pytest.raises(DataError, match=r"reward_model\.ground_truth"):
        inspect_source(str(path), "auto", "question", "reward_model.ground_truth")


def test_empty_dataset_is_rejected(tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "x", "answer": "1"}]).slice(0, 0), path)
    with pytest.raises(DataError, match="empty"):
        inspect_source(str(path), "auto", "prompt", "answer")


def test_jsonl_with_plain_text_prompt_and_suffix(tmp_path, tokenizer_dir):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps({"problem": f"What is {i}+1?", "answer": str(i + 1)}) for i in range(3)))
    assert inspect_source(str(path), "auto", "problem", "answer").num_rows == 3
    norm = Normalise(tokenizer_dir, "problem", "answer", "Put the answer in \\boxed{}.", 512)
    out = norm({"problem": np.asarray(["What is 1+1?"], dtype=object), "answer": np.asarray(["2"], dtype=object)})
    assert "boxed" in out["uid"][0]
    assert list(out["gold"]) == ["2"]


def test_row_with_null_answer_names_the_field(tokenizer_dir):
    norm = Normalise(tokenizer_dir, "problem", "answer", "", 512)
    with pytest.raises(DataError, match="'answer' is missing"):
        norm({"problem": np.asarray(["q"], dtype=object), "answer": np.asarray([None], dtype=object),
              "path": np.asarray(["/data/x.jsonl"], dtype=object)})


def _table(n):
    return {"uid": [f"u{i}" for i in range(n)], "prompt_ids": [[i] for i in range(n)], "gold": [str(i) for i in range(n)]}


def test_shards_cover_each_epoch_exactly_once_and_reshuffle():
    n, per_shard, per_step = 12, 3, 2
    maker = ShardPrompts(_table(n), per_shard, per_step, seed=0, shuffle=True)
    shards = maker({"id": np.arange(8)})["payload"]
    first = [u for s in shards[:4] for u in s.uids]
    second = [u for s in shards[4:] for u in s.uids]
    assert sorted(first) == sorted(second) == sorted(_table(n)["uid"])
    assert first != second  # a new order every epoch
    assert [s.step for s in shards] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_resumed_stream_continues_where_the_run_stopped():
    table = _table(10)
    whole = ShardPrompts(table, 2, 1, seed=3, shuffle=True)({"id": np.arange(9)})["payload"]
    resumed = ShardPrompts(table, 2, 1, seed=3, shuffle=True)({"id": np.arange(4, 9)})["payload"]
    assert [s.uids for s in whole[4:]] == [s.uids for s in resumed]


def test_epoch_order_is_a_seeded_permutation():
    a, b = epoch_order(50, 1, 0, True), epoch_order(50, 1, 0, True)
    assert (a == b).all() and sorted(a) == list(range(50)) and not (a == epoch_order(50, 1, 1, True)).all()


def test_synthetic_heldout_never_overlaps_train():
    train = set(sample_problems(2000, 0, 3, "train"))
    held = set(sample_problems(256, 1, 3, "heldout"))
    assert not train & held and len(held) == 256
    rows = to_rows(list(held)[:2])
    assert rows[0]["reward_model"]["ground_truth"] == str(list(held)[0].answer)


def test_reference_solution_adds_by_columns_and_flawed_variant_drops_carries():
    from task.synthetic import Problem

    assert Problem(34, 48).solution() == "4+8=12 3+4+1=8 \\boxed{82}"
    assert Problem(34, 48).solution(drop_carries=True) == "4+8=12 3+4=7 \\boxed{72}"
    assert Problem(99, 1).solution().endswith("\\boxed{100}")
    assert not Problem(12, 34).has_carry and Problem(12, 34).solution(True) == Problem(12, 34).solution()
    from evaluation.verifier import score

    for p in sample_problems(50, 4, 2, "train"):
        assert score(p.solution(), str(p.answer)) == 1.0
        assert score(p.solution(drop_carries=True), str(p.answer)) == (0.0 if p.has_carry else 1.0)


def test_refill_reserve_is_deterministic_per_shard_and_travels_with_the_shard():
    from pipeline.data import refill_rows

    a, b = refill_rows(100, 0, 7, 12), refill_rows(100, 0, 7, 12)
    assert (a == b).all() and len(set(a.tolist())) == 12  # without replacement when it fits
    assert not (refill_rows(100, 0, 8, 12) == a).all() and not (refill_rows(100, 1, 7, 12) == a).all()
    table = {"uid": [f"u{i}" for i in range(10)], "prompt_ids": [[i] for i in range(10)],
             "gold": [str(i) for i in range(10)]}
    shard = ShardPrompts(table, 2, 1, seed=0, shuffle=True, refill_per_shard=4)({"id": np.asarray([3])})["payload"][0]
    assert len(shard.refill_prompt_ids) == 4
    assert shard.refill_golds == [str(r) for r in refill_rows(10, 0, 3, 4)]
    assert shard.refill_prompt_ids == [[int(g)] for g in shard.refill_golds]
