"""Reference responses built from benchmark solutions (shared by the verifier tests)."""
from __future__ import annotations

from evaluation.benchmarks import Problem, load_benchmark

REFERENCE_BENCHMARKS = ("math500", "minerva_math", "olympiadbench")


def reference_response(problem: Problem) -> str:
    """The problem's own solution, ending with its official answer in the paper's format.

    MATH and Minerva solutions already end with ``\\boxed{answer}``; OlympiadBench solutions do
    not, so the official final answer is appended as ``\\boxed{...}``.
    """
    solution = problem.solution or ""
    if "\\boxed" in solution:
        return solution
    return f"{solution}\n\nThe final answer is $\\boxed{{{problem.gold}}}$."


def reference_pairs(name: str, limit: int | None = None):
    """(own_response, gold, other_response) triples: other = next problem with a different gold."""
    problems = load_benchmark(name, limit=limit)
    triples = []
    for i, p in enumerate(problems):
        j = next((k % len(problems) for k in range(i + 1, i + len(problems))
                  if problems[k % len(problems)].gold != p.gold), i)
        triples.append((reference_response(p), p.gold, reference_response(problems[j])))
    return triples
