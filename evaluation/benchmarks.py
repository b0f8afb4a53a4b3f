"""Evaluation benchmarks, normalised to ``Problem(id, prompt, gold)``.

Each benchmark is a ``BenchmarkSpec`` in ``REGISTRY`` (a ``core.registry.Registry`` keyed by name). It loads from a local folder
``<data_dir>/benchmarks/<name>/test.jsonl`` when present, else from its public dataset id (needs the
``datasets`` package and network). The data dir defaults to ``../shared/data`` relative to the repo
root and is overridden by the ``EAPO_DATA_DIR`` environment variable or an explicit argument.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from core.registry import Registry
from evaluation.extract import last_boxed
from evaluation.verifier import normalize_gold

DEFAULT_PROMPT_TEMPLATE = "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Problem:
    """One benchmark item: ``prompt`` is the formatted question, ``gold`` the normalised answer."""

    id: str
    prompt: str
    gold: str
    question: str
    solution: str | None = None


def _field(name: str) -> Callable[[dict], object]:
    return lambda row: row[name]


def _gsm8k_gold(row: dict) -> str:
    return str(row["answer"]).split("####")[-1].strip().replace(",", "")


def _minerva_gold(row: dict) -> str:
    boxed = last_boxed(row["solution"])
    if boxed is None:
        raise KeyError("solution has no \\boxed{...} answer")
    return boxed


def _first_present(*names: str) -> Callable[[dict], object]:
    def get(row: dict):
        for name in names:
            if row.get(name) not in (None, ""):
                return row[name]
        raise KeyError(" / ".join(names))
    return get


def _solution_text(row: dict) -> str | None:
    sol = row.get("solution")
    if isinstance(sol, list):
        sol = "\n".join(str(s) for s in sol)
    return sol


@dataclass(frozen=True)
class BenchmarkSpec:
    """How to read one benchmark: where it lives and which fields hold question and gold."""

    name: str
    dataset_id: str
    split: str
    question: Callable[[dict], object]
    gold: Callable[[dict], object]
    dataset_config: str | None = None


REGISTRY: Registry[BenchmarkSpec] = Registry("benchmark", key="benchmarks")
for _spec in [
    BenchmarkSpec("aime24", "math-ai/aime24", "test", _first_present("problem", "question"), _field("answer")),
    BenchmarkSpec("aime25", "math-ai/aime25", "test", _first_present("question", "problem"), _field("answer")),
    BenchmarkSpec("amc23", "math-ai/amc23", "test", _first_present("problem", "question"), _field("answer")),
    BenchmarkSpec("math500", "HuggingFaceH4/MATH-500", "test", _field("problem"), _field("answer")),
    BenchmarkSpec("minerva_math", "math-ai/minervamath", "test", _field("problem"), _minerva_gold),
    BenchmarkSpec("olympiadbench", "Hothan/OlympiadBench", "train", _field("question"),
                  _field("final_answer"), dataset_config="OE_TO_maths_en_COMP"),
    BenchmarkSpec("gsm8k", "openai/gsm8k", "test", _field("question"), _gsm8k_gold, dataset_config="main"),
]:
    REGISTRY.add(_spec.name, _spec)


def data_dir(override: str | None = None) -> Path:
    """The data directory: ``override``, else ``$EAPO_DATA_DIR``, else ``<repo>/../shared/data``."""
    path = override or os.environ.get("EAPO_DATA_DIR") or str(REPO_ROOT.parent / "shared" / "data")
    return Path(path).expanduser().resolve()


def _read_jsonl(path: Path) -> Iterable[tuple[int, dict]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None


def _rows_from_hub(spec: BenchmarkSpec) -> Iterable[tuple[int, dict]]:
    try:
        import datasets  # type: ignore
    except ImportError as e:
        raise FileNotFoundError(
            f"benchmark {spec.name!r}: no local copy and the 'datasets' package is not installed "
            f"to load {spec.dataset_id!r}"
        ) from e
    ds = datasets.load_dataset(spec.dataset_id, spec.dataset_config, split=spec.split)
    return enumerate(ds, 1)


def load_benchmark(
    name: str,
    data_dir_override: str | None = None,
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    limit: int | None = None,
) -> list[Problem]:
    """Load benchmark ``name`` as a list of ``Problem`` (first ``limit`` items if given)."""
    spec = REGISTRY.get(name)
    path = data_dir(data_dir_override) / "benchmarks" / name / "test.jsonl"
    rows = _read_jsonl(path) if path.exists() else _rows_from_hub(spec)
    where = str(path) if path.exists() else spec.dataset_id
    problems = []
    for rownum, row in rows:
        if limit is not None and len(problems) >= limit:
            break
        try:
            question, gold = str(spec.question(row)), normalize_gold(spec.gold(row))
        except KeyError as e:
            raise ValueError(f"{where}: row {rownum}: missing field {e}") from None
        pid = str(row.get("id", row.get("unique_id", row.get("idx", rownum - 1))))
        problems.append(Problem(f"{name}/{pid}", prompt_template.format(question=question), gold,
                                question, _solution_text(row)))
    return problems
