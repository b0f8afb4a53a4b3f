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


def data_cfg(prompt_key: str, answer_key: str, suffix: str, max_tokens: int):
    """The run's ``data`` section (configs/data/synthetic.yaml) with these fields."""
    from core.config import DataConfig
    from core.config_files import compose_option
    from core.typed import build

    values = {**compose_option("data", "synthetic"), "prompt_key": prompt_key, "answer_key": answer_key,
              "prompt_suffix": suffix, "max_prompt_tokens": max_tokens}
    return build(DataConfig, values, "data")


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
    out = Normalise(tokenizer_dir, data_cfg("prompt", "reward_model.ground_truth", "", 100_000))(
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
    norm = Normalise(tokenizer_dir, data_cfg("problem", "answer", "Put the answer in \\boxed{}.", 512))
    out = norm({"problem": np.asarray(["What is 1+1?"], dtype=object), "answer": np.asarray(["2"], dtype=object)})
    assert "boxed" in out["uid"][0]
    assert list(out["gold"]) == ["2"]


def test_row_with_null_answer_names_the_field(tokenizer_dir):
    norm = Normalise(tokenizer_dir, data_cfg("problem", "answer", "", 512))
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


# ---- bad input found by trying it: each fails fast naming file/row/field, or is counted and logged ----

def _parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def test_null_or_nan_answer_names_file_row_and_field(tmp_path):
    import pandas as pd

    # pandas writes None as null and a float NaN as NaN: both used to become the gold string "nan"
    pd.DataFrame({"prompt": ["a", "b", "c"], "answer": ["1", "2", None]}).to_parquet(tmp_path / "null.parquet")
    with pytest.raises(DataError, match=r"null\.parquet: row 3: field 'answer' \(data\.answer_key\) is null or NaN"):
        inspect_source(str(tmp_path / "null.parquet"), "auto", "prompt", "answer")
    pd.DataFrame({"prompt": ["a", "b"], "answer": [1.0, float("nan")]}).to_parquet(tmp_path / "nan.parquet")
    with pytest.raises(DataError, match=r"nan\.parquet: row 2: field 'answer'"):
        inspect_source(str(tmp_path / "nan.parquet"), "auto", "prompt", "answer")
    nested = [{"prompt": "a", "reward_model": {"ground_truth": "1"}}, {"prompt": "b", "reward_model": {"ground_truth": None}}]
    with pytest.raises(DataError, match=r"row 2: field 'reward_model\.ground_truth'"):
        inspect_source(_parquet(tmp_path / "nested.parquet", nested), "auto", "prompt", "reward_model.ground_truth")


def test_empty_answers_are_counted_and_all_empty_is_an_error(tmp_path):
    some = _parquet(tmp_path / "some.parquet", [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": " "}])
    info = inspect_source(some, "auto", "prompt", "answer")
    assert (info.num_rows, info.empty_answers) == (2, 1)
    every = _parquet(tmp_path / "every.parquet", [{"prompt": "a", "answer": ""}, {"prompt": "b", "answer": ""}])
    with pytest.raises(DataError, match=r"every\.parquet: field 'answer' .*empty on every one of its 2 rows"):
        inspect_source(every, "auto", "prompt", "answer")


def test_malformed_prompt_names_file_row_and_field(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "q"}], "answer": "1"}, {"prompt": [{"role": "user"}], "answer": "2"}]
    with pytest.raises(DataError, match=r"bad_prompt\.parquet: row 2: field 'prompt' .*chat messages"):
        inspect_source(_parquet(tmp_path / "bad_prompt.parquet", rows), "auto", "prompt", "answer")


def test_non_utf8_bytes_name_file_row_and_field(tmp_path):
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b'{"problem": "ok", "answer": "1"}\n{"problem": "bad \xff\xfe", "answer": "2"}\n')
    with pytest.raises(DataError, match=r"bytes\.jsonl: row 2: field 'problem' \(data\.prompt_key\) is not valid UTF-8"):
        inspect_source(str(path), "auto", "problem", "answer")


def test_dropped_prompts_are_counted_and_logged(tokenizer_dir):
    from pipeline.data import collect_prompts

    rows = {"problem": np.asarray(["What is 1+1?", "x " * 300, "What is 2+2?"], dtype=object),
            "answer": np.asarray(["2", "3", ""], dtype=object)}
    out = Normalise(tokenizer_dir, data_cfg("problem", "answer", "", 64))(rows)
    logged = []
    table = collect_prompts([out], 64, log=logged.append)
    assert table["gold"] == ["2"] and table["dropped"] == {"too_long": 1, "empty_answer": 1}
    assert logged and "dropped 1 prompts longer than data.max_prompt_tokens=64" in logged[0]
    assert "1 rows with an empty answer" in logged[0]
    with pytest.raises(DataError, match="no usable prompts: all 2 were dropped"):
        collect_prompts([Normalise(tokenizer_dir, data_cfg("problem", "answer", "", 64))(
            {k: v[1:] for k, v in rows.items()})], 64, log=logged.append)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from task.tiny_model import build_random_policy, tiny_spec

    return build_random_policy(str(tmp_path_factory.mktemp("ckpt")), seed=0,
                               spec=tiny_spec(hidden_size=64, num_layers=1, intermediate_size=64))


@pytest.mark.parametrize("case", ["null", "utf8", "all_empty"])
def test_data_errors_end_the_job_with_one_line_and_exit_code_2(tmp_path, tiny_checkpoint, case):
    """The job's own entry point: a data error is one `error:` line naming file/row/field, rc 2, before Ray."""
    import subprocess
    import sys

    from tests.conftest import REPO

    if case == "utf8":
        data = tmp_path / "train.jsonl"
        data.write_bytes(b'{"prompt": "ok", "answer": "1"}\n{"prompt": "\xff", "answer": "2"}\n')
        expect = r"train\.jsonl: row 2: field 'prompt' .*not valid UTF-8"
    else:
        answers = ["1", None] if case == "null" else ["", ""]
        data = _parquet(tmp_path / "train.parquet", [{"prompt": f"q{i}", "answer": a} for i, a in enumerate(answers)])
        expect = r"row 2: field 'answer' .*null" if case == "null" else "empty on every one of its 2 rows"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.run", "model=pretrained", f"model.path={tiny_checkpoint}", "data=math_train",
         f"data.path={data}", "data.format=auto", "data.answer_key=answer", "data.max_prompt_tokens=128",
         "heldout.size=0", f"run_dir={tmp_path / 'run'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    import re

    assert re.search(expect, lines[0]), lines[0]
    assert not (tmp_path / "run" / "ray_train").exists()  # nothing started
