"""Truncated importance weights against a float64 scalar loop."""
from __future__ import annotations

import math

import pytest
import torch

from losses.is_correction import truncated_is_weights


def loop_weights(old, beh, mask, cap):
    out, ratios = [], []
    for o_row, b_row, m_row in zip(old, beh, mask):
        row = []
        for o, b, m in zip(o_row, b_row, m_row):
            if not m:
                row.append(0.0)
                continue
            r = math.exp(max(-20.0, min(20.0, o - b)))
            ratios.append(r)
            row.append(min(r, cap))
        out.append(row)
    return out, sum(ratios) / len(ratios), sum(r > cap for r in ratios) / len(ratios)


@pytest.mark.parametrize("cap", [1.0, 2.0, 10.0])
def test_weights_and_metrics_match_loop(cap):
    g = torch.Generator().manual_seed(3)
    old = -torch.rand(6, 9, generator=g, dtype=torch.float64) * 3
    beh = old + torch.randn(6, 9, generator=g, dtype=torch.float64)
    beh[0, 0] = -50.0  # the engine found the token almost impossible: ratio e^20 before the cap
    mask = torch.rand(6, 9, generator=g) < 0.7
    mask[0, 0] = True
    w, metrics = truncated_is_weights(old, beh, mask, cap)
    ref, ratio_mean, clipped = loop_weights(old.tolist(), beh.tolist(), mask.tolist(), cap)
    torch.testing.assert_close(w, torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=0)
    assert metrics["is/ratio_mean"] == pytest.approx(ratio_mean, rel=1e-12)
    assert metrics["is/clipped_share"] == pytest.approx(clipped, rel=1e-12)
    assert float(w.max()) <= cap and (w[~mask] == 0).all()


def test_no_gradient_flows_through_the_weights():
    old = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    w, _ = truncated_is_weights(old, torch.full((2, 3), -0.5, dtype=torch.float64), torch.ones(2, 3), 2.0)
    assert not w.requires_grad


def test_on_policy_weights_are_one_and_bad_cap_is_rejected():
    lp = torch.log(torch.rand(3, 4, dtype=torch.float64))
    w, metrics = truncated_is_weights(lp, lp, torch.ones(3, 4), 2.0)
    assert (w == 1).all() and metrics == {"is/ratio_mean": 1.0, "is/clipped_share": 0.0}
    with pytest.raises(ValueError, match="is_cap"):
        truncated_is_weights(lp, lp, torch.ones(3, 4), 0.0)
