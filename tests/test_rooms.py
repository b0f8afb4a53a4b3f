"""Rooms import one way: a module may import its own room and rooms below it, never one above.

core (shared types) < losses, task, evaluation < actors < serve, pipeline (siblings: the endpoint and the orchestrator).
"""
from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

RANK = {"core": 0, "losses": 1, "task": 1, "evaluation": 1, "actors": 2, "serve": 3, "pipeline": 3}
SIDEWAYS_OK = set()  # (importer, imported) pairs of the same rank that may import each other


def imported_rooms(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(RANK)


def test_no_room_imports_a_room_above_it_or_beside_it():
    bad = []
    for room, rank in RANK.items():
        for path in sorted((REPO / room).rglob("*.py")):
            for other in imported_rooms(path) - {room}:
                if RANK[other] > rank or (RANK[other] == rank and (room, other) not in SIDEWAYS_OK):
                    bad.append(f"{path.relative_to(REPO)} imports {other}")
    assert not bad, "\n".join(bad)


def test_core_is_light():
    """core imports no heavy framework at module import time (torch, ray, vllm, transformers, deepspeed)."""
    heavy = {"torch", "ray", "vllm", "transformers", "deepspeed"}
    for path in (REPO / "core").rglob("*.py"):
        top = {n.names[0].name.split(".")[0] for n in ast.parse(path.read_text()).body if isinstance(n, ast.Import)}
        top |= {n.module.split(".")[0] for n in ast.parse(path.read_text()).body
                if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
        assert not (top & heavy), f"{path.name} imports {top & heavy} at module level"
