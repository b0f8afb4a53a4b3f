"""Say it when steps train on nothing (rank 0 of the train workers, once per step's metrics).

Two conditions, each counted over the run and printed as one ``WARNING`` line on the console (Ray forwards the
worker's stdout to the driver) at its 1st, 2nd, 4th, 8th... occurrence, so a run that trains on nothing says
so at its first step without flooding a long run:

* **no signal** (``train/no_signal`` = 1): no response token carried credit, the optimizer step was skipped
  (``actors.no_signal``);
* **dynamic sampling out of rounds** (``dynamic_sampling/unfilled_share`` > 0): the step's batch was topped up
  for ``algorithm.max_sampling_rounds`` extra rounds and still holds groups without signal (left in, untrained).

Each line names the count, the metric and the likely cause read from the step's own metrics: the share of
responses cut at ``rollout.max_tokens`` (``response_length/truncated_share``) and the shares of groups whose
responses were all correct or all wrong (``reward/solved_all_share``, ``reward/solved_none_share``).
"""
from __future__ import annotations

TRUNCATION_CAUSE = 0.5  # at least this share of truncated responses is named as the first likely cause


def likely_cause(metrics: dict, max_tokens: int) -> str:
    """The step's likely cause of groups without signal, from its metrics (see module docstring)."""
    truncated = metrics.get("response_length/truncated_share", 0.0)
    groups = (f"{metrics.get('reward/solved_all_share', 0.0):.0%} of the step's groups all correct, "
              f"{metrics.get('reward/solved_none_share', 0.0):.0%} all wrong (equal rewards within a group: no signal)")
    if truncated >= TRUNCATION_CAUSE:
        return (f"{truncated:.0%} of responses reached rollout.max_tokens={max_tokens} (response_length/"
                f"truncated_share): cut answers are wrong; {groups}")
    return groups


def _due(count: int) -> bool:
    """1st, 2nd, 4th, 8th... occurrence."""
    return count & (count - 1) == 0


class NothingTrainedWarnings:
    """Counts the two conditions over a run and returns the console line of a step when one is due."""

    def __init__(self, max_tokens: int, max_rounds: int):
        self.max_tokens, self.max_rounds = max_tokens, max_rounds
        self.no_signal = self.exhausted = 0

    def line(self, step: int, metrics: dict) -> str | None:
        """The ``WARNING`` line for ``step``'s ``metrics`` (train worker's step metrics), or None."""
        exhausted = metrics.get("dynamic_sampling/unfilled_share", 0.0) > 0
        rounds = (f"dynamic sampling used all {self.max_rounds} extra rounds (algorithm.max_sampling_rounds) and "
                  f"{metrics.get('dynamic_sampling/unfilled_share', 0.0):.0%} of the batch still has no signal "
                  f"(dynamic_sampling/unfilled_share)")
        if metrics.get("train/no_signal", 0.0):
            self.no_signal += 1
            if not _due(self.no_signal):
                return None
            return (f"WARNING: step {step} trained on nothing: no response token carried signal, the optimizer step "
                    f"was skipped (train/no_signal; {self.no_signal} such step(s) so far)"
                    f"{'; ' + rounds if exhausted else ''}. Likely cause: {likely_cause(metrics, self.max_tokens)}")
        if exhausted:
            self.exhausted += 1
            if _due(self.exhausted):
                return (f"WARNING: step {step}: {rounds}; {self.exhausted} such step(s) so far. Likely cause: "
                        f"{likely_cause(metrics, self.max_tokens)}")
        return None
