import torch

from losses import build_algorithm
from losses.quadrants import quadrant_masks
from tests.losses.conftest import make_batch
from tests.losses.loops import loop_quadrant_of


def test_masks_match_loop_and_partition():
    b = make_batch(seed=7, B=12, T=9, G=3)
    masks = quadrant_masks(b["advantages"], b["entropy"], b["mask"], b["group_ids"])
    ref = loop_quadrant_of(b["advantages"].tolist(), b["entropy"].tolist(), b["mask"].tolist(), b["group_ids"].tolist())
    for q, qm in masks.items():
        assert qm.dtype == torch.bool
        expect = torch.tensor([[r == q for r in row] for row in ref])
        assert torch.equal(qm, expect), q
        assert qm.any(), q
    total = sum(qm.long() for qm in masks.values())
    assert torch.equal(total, b["mask"].long())  # every response token in exactly one, padding in none


def test_diagnostics_match_loop():
    b = make_batch(seed=8, B=12, T=9, G=3)
    algo = build_algorithm({"name": "eapo"})
    credit = algo.shape_credit(b["advantages"], b["entropy"], b["old_logprobs"], b["mask"], b["group_ids"])
    diag = algo.diagnostics(b["advantages"], credit, b["entropy"], b["mask"], b["group_ids"])
    adv, ent, mask = b["advantages"].tolist(), b["entropy"].tolist(), b["mask"].tolist()
    shaped, w = credit.advantages.tolist(), credit.token_weight.tolist()
    ref = loop_quadrant_of(adv, ent, mask, b["group_ids"].tolist())
    cells = [(i, t) for i in range(len(adv)) for t in range(len(adv[0])) if mask[i][t]]
    total_signal = sum(abs(shaped[i][t] * w[i][t]) for i, t in cells)
    for q in ("PHR", "PLR", "NLR", "NHR"):
        qc = [(i, t) for i, t in cells if ref[i][t] == q]
        assert abs(diag[f"quadrant/{q}/token_share"] - len(qc) / len(cells)) < 1e-12
        assert abs(diag[f"quadrant/{q}/entropy_mean"] - sum(ent[i][t] for i, t in qc) / len(qc)) < 1e-12
        assert abs(diag[f"quadrant/{q}/adv_abs_mean"] - sum(abs(adv[i][t]) for i, t in qc) / len(qc)) < 1e-12
        share = sum(abs(shaped[i][t] * w[i][t]) for i, t in qc) / total_signal
        assert abs(diag[f"quadrant/{q}/signal_share"] - share) < 1e-12
    assert abs(sum(diag[f"quadrant/{q}/signal_share"] for q in ("PHR", "PLR", "NLR", "NHR")) - 1) < 1e-12


def test_diagnostics_degenerate_finite():
    mask = torch.zeros(3, 4, dtype=torch.bool)
    z = torch.zeros(3, 4)
    algo = build_algorithm({"name": "dapo"})
    credit = algo.shape_credit(z, z, z, mask, torch.tensor([0, 0, 1]))
    diag = algo.diagnostics(z, credit, z, mask, torch.tensor([0, 0, 1]))
    assert all(v == v and abs(v) < float("inf") for v in diag.values())
    assert all(v == 0.0 for k, v in diag.items() if k.startswith("quadrant/"))
