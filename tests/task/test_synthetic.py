"""The synthetic task's reference solutions and their noisy variants (the warm start's demonstrations)."""
import random

from task.synthetic import Problem
from task.warm_start import _fact_slips


def test_reference_solution_and_its_flawed_variants():
    p = Problem(347, 285)
    assert p.solution() == "7+5=12 4+8+1=13 3+2+1=6 \\boxed{632}"
    assert p.solution(drop_carries=True) == "7+5=12 4+8=12 3+2=5 \\boxed{522}"
    # a slipped digit fact: the rest of the working follows it, so the boxed answer is wrong too
    assert p.solution(slips=(0, 1)) == "7+5=12 4+8+1=14 3+2+1=6 \\boxed{642}"
    assert p.solution(slips=(-1,)) == "7+5=11 4+8+1=13 3+2+1=6 \\boxed{631}"
    assert Problem(9, 9).solution(slips=(1,)) == "9+9=19 \\boxed{19}"  # a column total stays a two-digit sum


def test_fact_slips_rate_and_no_draws_at_zero():
    rng = random.Random(0)
    slips = [s for _ in range(4000) for s in _fact_slips(rng, 2, 0.25)]
    assert abs(sum(s != 0 for s in slips) / len(slips) - 0.25) < 0.02 and set(slips) == {-1, 0, 1}
    rng = random.Random(0)
    assert _fact_slips(rng, 3, 0.0) == () and rng.random() == random.Random(0).random()
