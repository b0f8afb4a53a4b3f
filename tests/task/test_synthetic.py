"""The synthetic task's reference solutions and their noisy variants (the warm start's demonstrations)."""
import random

from task.synthetic import Problem
from task.warm_start import _fact_slips, _free_letters


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


def test_free_letters_are_written_before_each_step_and_leave_the_answer_alone():
    p = Problem(347, 285)
    assert p.solution(free=("kc", "ap", "")) == "kc 7+5=12 ap 4+8+1=13 3+2+1=6 \\boxed{632}"
    assert p.solution(free=("q",), slips=(1,)) == "q 7+5=13 4+8+1=13 3+2+1=6 \\boxed{633}"


def test_free_letters_are_uniform_over_the_alphabet_and_drawn_only_when_asked():
    rng = random.Random(0)
    cols = [c for _ in range(3000) for c in _free_letters(rng, 2, 3, 4)]
    assert len(cols) == 6000 and all(len(c) == 3 for c in cols)
    counts = {x: sum(c.count(x) for c in cols) / 18000 for x in "abcd"}
    assert set("".join(cols)) == set("abcd") and all(abs(f - 0.25) < 0.02 for f in counts.values())
    rng = random.Random(0)
    assert _free_letters(rng, 3, 0, 16) == () and rng.random() == random.Random(0).random()
