import torch

from losses import build_algorithm
from losses.quadrants import QUADRANTS, quadrant_masks
from tests.losses.conftest import make_batch
from tests.losses.loops import loop_quadrant_of


def test_masks_match_loop_and_partition_signed_tokens():
    b = make_batch(seed=7, B=12, T=9, G=3)
    masks = quadrant_masks(b["advantages"], b["entropy"], b["mask"], b["group_ids"])
    ref = loop_quadrant_of(b["advantages"].tolist(), b["entropy"].tolist(), b["mask"].tolist(), b["group_ids"].tolist())
    for q, qm in masks.items():
        assert qm.dtype == torch.bool
        expect = torch.tensor([[r == q for r in row] for row in ref])
        assert torch.equal(qm, expect), q
        assert qm.any(), q
    total = sum(qm.long() for qm in masks.values())
    signed = b["mask"] & (b["advantages"] != 0)
    zero = b["mask"] & (b["advantages"] == 0)
    assert zero.any() and signed.any()  # the batch exercises both kinds of response token
    assert torch.equal(total, signed.long())  # every Â≠0 token in exactly one quadrant; Â=0 and padding in none


def test_zero_advantage_tokens_are_in_no_quadrant():
    """Â = 0 is neither positive nor negative (ALGORITHM.md): a ``>= 0`` polarity puts these in PHR/PLR."""
    mask = torch.ones(2, 3, dtype=torch.bool)
    adv = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    ent = torch.tensor([[0.1, 2.0, 0.5], [0.3, 1.5, 0.9]])
    masks = quadrant_masks(adv, ent, mask, torch.tensor([0, 0]))
    assert not any(qm[0].any() for qm in masks.values())
    assert sum(int(qm[1].sum()) for qm in masks.values()) == 3


def loop_diagnostics(adv, ent, mask, gid, shaped, w):
    """Reference of quadrant_diagnostics with plain loops (float64 python)."""
    ref = loop_quadrant_of(adv, ent, mask, gid)
    cells = [(i, t) for i in range(len(adv)) for t in range(len(adv[0])) if mask[i][t]]
    signed = [(i, t) for i, t in cells if adv[i][t] != 0]
    total_signal = sum(abs(shaped[i][t] * w[i][t]) for i, t in signed)
    out = {}
    for q in QUADRANTS:
        qc = [(i, t) for i, t in cells if ref[i][t] == q]
        n = len(qc)
        out[f"quadrant/{q}/token_share"] = n / len(signed) if signed else 0.0
        out[f"quadrant/{q}/entropy_mean"] = sum(ent[i][t] for i, t in qc) / n if n else 0.0
        out[f"quadrant/{q}/adv_abs_mean"] = sum(abs(adv[i][t]) for i, t in qc) / n if n else 0.0
        sig = sum(abs(shaped[i][t] * w[i][t]) for i, t in qc)
        out[f"quadrant/{q}/adv_mass_share"] = sig / total_signal if total_signal > 0 else 0.0
    out["quadrant/zero/token_share"] = (len(cells) - len(signed)) / len(cells) if cells else 0.0
    return out


def diagnostics_of(name, b):
    algo = build_algorithm({"name": name})
    credit = algo.shape_credit(b["advantages"], b["entropy"], b["old_logprobs"], b["mask"], b["group_ids"])
    diag = algo.diagnostics(b["advantages"], credit, b["entropy"], b["mask"], b["group_ids"])
    ref = loop_diagnostics(b["advantages"].tolist(), b["entropy"].tolist(), b["mask"].tolist(),
                           b["group_ids"].tolist(), credit.advantages.tolist(), credit.token_weight.tolist())
    return diag, ref


def test_diagnostics_match_loop():
    b = make_batch(seed=8, B=12, T=9, G=3)
    diag, ref = diagnostics_of("eapo", b)
    for key, value in ref.items():
        assert abs(diag[key] - value) < 1e-12, key
    assert 0 < diag["quadrant/zero/token_share"] < 1
    for stat in ("token_share", "adv_mass_share"):
        assert abs(sum(diag[f"quadrant/{q}/{stat}"] for q in QUADRANTS) - 1) < 1e-12, stat


def test_diagnostics_all_zero_advantages():
    b = make_batch(seed=8, B=12, T=9, G=3)
    b["advantages"] = torch.zeros_like(b["advantages"])
    diag, ref = diagnostics_of("dapo", b)
    assert {k: v for k, v in diag.items() if k.startswith("quadrant/")} == ref
    assert diag["quadrant/zero/token_share"] == 1.0
    assert all(v == 0.0 for k, v in diag.items() if k.startswith("quadrant/") and "/zero/" not in k)


def test_diagnostics_degenerate_finite():
    mask = torch.zeros(3, 4, dtype=torch.bool)
    z = torch.zeros(3, 4)
    algo = build_algorithm({"name": "dapo"})
    credit = algo.shape_credit(z, z, z, mask, torch.tensor([0, 0, 1]))
    diag = algo.diagnostics(z, credit, z, mask, torch.tensor([0, 0, 1]))
    assert all(v == v and abs(v) < float("inf") for v in diag.values())
    assert "quadrant/zero/token_share" in diag
    assert all(v == 0.0 for k, v in diag.items() if k.startswith("quadrant/"))
