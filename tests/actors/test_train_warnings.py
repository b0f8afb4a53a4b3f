"""The console says when steps train on nothing: one line per due occurrence, naming count, metric and cause."""
from __future__ import annotations

from actors.train_warnings import NothingTrainedWarnings

# pipeline.bench's README command on the warm start: every response cut at 16 tokens, every group all wrong,
# dynamic sampling out of its 3 extra rounds, nothing left to train on
EMPTY = {"train/no_signal": 1.0, "response_length/truncated_share": 0.97, "reward/solved_all_share": 0.0,
         "reward/solved_none_share": 1.0, "dynamic_sampling/unfilled_share": 1.0}
HEALTHY = {"train/no_signal": 0.0, "response_length/truncated_share": 0.02, "reward/solved_all_share": 0.3,
           "reward/solved_none_share": 0.1, "dynamic_sampling/unfilled_share": 0.0}


def test_a_step_that_trains_on_nothing_says_so_with_its_likely_cause_at_once():
    warnings = NothingTrainedWarnings(max_tokens=16, max_rounds=3)
    line = warnings.line(1, EMPTY)
    assert line.startswith("WARNING: step 1 trained on nothing") and "train/no_signal; 1 such step(s) so far" in line
    assert "97% of responses reached rollout.max_tokens=16" in line
    assert "all 3 extra rounds (algorithm.max_sampling_rounds)" in line and "100% of the batch" in line
    assert "100% all wrong" in line and "\n" not in line


def test_warnings_are_rate_limited_to_the_1st_2nd_4th_8th_16th_occurrence():
    warnings = NothingTrainedWarnings(max_tokens=16, max_rounds=3)
    lines = {step: warnings.line(step, EMPTY if step != 3 else HEALTHY) for step in range(1, 21)}
    shown = {step: line for step, line in lines.items() if line}
    assert list(shown) == [1, 2, 5, 9, 17]  # occurrences 1, 2, 4, 8, 16 (step 3 trained)
    assert "step 9 trained on nothing" in shown[9] and "8 such step(s) so far" in shown[9]


def test_dynamic_sampling_out_of_rounds_is_named_even_when_the_step_trained():
    warnings = NothingTrainedWarnings(max_tokens=32, max_rounds=2)
    partly = {**HEALTHY, "dynamic_sampling/unfilled_share": 0.25, "reward/solved_all_share": 0.7}
    line = warnings.line(4, partly)
    assert line.startswith("WARNING: step 4: dynamic sampling used all 2 extra rounds")
    assert "25% of the batch still has no signal (dynamic_sampling/unfilled_share)" in line
    assert "70% of the step's groups all correct" in line and "rollout.max_tokens" not in line  # 2% truncated
    assert warnings.line(5, HEALTHY) is None
