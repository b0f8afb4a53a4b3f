import pytest
import torch

from losses import Normalizer, build_algorithm
from losses.aggregation import aggregate, make_normalizer
from tests.losses.conftest import make_batch


def loop_aggregate(loss, mask, mode, L):
    l, m = loss.tolist(), mask.tolist()
    seqs = [i for i in range(len(m)) if any(m[i])]
    n_tok = sum(sum(row) for row in m)
    if mode == "token_mean":
        return sum(l[i][t] for i in seqs for t in range(len(m[i])) if m[i][t]) / n_tok
    per_seq = []
    for i in seqs:
        s = sum(l[i][t] for t in range(len(m[i])) if m[i][t])
        per_seq.append({"seq_mean_token_mean": s / sum(m[i]), "seq_mean_token_sum": s,
                        "seq_mean_token_sum_norm": s / L}[mode])
    return sum(per_seq) / len(seqs)


MODES = ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"]


@pytest.mark.parametrize("mode", MODES)
def test_aggregate_matches_loop(mode):
    b = make_batch(seed=30)
    loss = torch.randn(b["mask"].shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    loss[~b["mask"]] = float("nan")  # padding garbage must not leak
    norm = make_normalizer(b["mask"], max_response_length=11)
    assert norm.total_sequences == int(b["mask"].any(-1).sum()) and norm.max_response_length == 11
    out = aggregate(loss, b["mask"], norm, mode)
    assert abs(out.item() - loop_aggregate(loss, b["mask"], mode, 11)) < 1e-12


def setup(seed):
    b = make_batch(seed=seed, B=12, T=9, G=3)
    g = torch.Generator().manual_seed(seed)
    theta = (b["old_logprobs"] + 0.3 * torch.randn(b["mask"].shape, generator=g, dtype=torch.float64)).requires_grad_()
    ref = b["old_logprobs"] + 0.2 * torch.randn(b["mask"].shape, generator=g, dtype=torch.float64)
    return b, theta, ref


def micro_loss(algo, b, theta, ref, credit, rows, norm):
    """Loss of the micro-batch ``rows``; current entropy is a differentiable function of theta."""
    lp = theta[rows]
    ent = torch.nn.functional.softplus(lp)
    return algo.policy_loss(lp, b["old_logprobs"][rows], credit[rows], b["mask"][rows], norm,
                            ref_logprobs=ref[rows], entropy=ent).loss


def grad_of(loss_fn, theta):
    theta.grad = None
    loss_fn()
    g = theta.grad.clone()
    theta.grad = None
    return g


SPLIT_INVARIANT = ["eapo", "grpo", "dapo", "dr_grpo", "gspo", "forking", "entroadv", "entroreg", "w_reinf", "a3po",
                   "quadrant_phr", "eapo_wo_nhr"]
RANKS = [[[0, 1, 2], [3]], [[4, 5], [6, 7, 8, 9, 10, 11]]]  # 2 DP ranks x 2 micro-batches, uneven


@pytest.mark.parametrize("name", SPLIT_INVARIANT)
@pytest.mark.parametrize("mode", MODES)
def test_split_invariance(name, mode):
    b, theta, ref = setup(seed=31)
    algo = build_algorithm({"name": name, "aggregation": mode, "kl_coef": 0.1, "entropy_coef": 0.01})
    credit = algo.shape_credit(b["advantages"], b["entropy"], b["old_logprobs"], b["mask"], b["group_ids"])
    all_rows = torch.arange(12)

    whole_norm = algo.normalizer(b["mask"])
    g_whole = grad_of(lambda: micro_loss(algo, b, theta, ref, credit, all_rows, whole_norm).backward(), theta)

    def accumulate():  # plain PyTorch gradient accumulation on one process (D = K = 1)
        for rows in ([0, 1, 2, 3, 4], [5, 6], [7, 8, 9, 10, 11]):
            micro_loss(algo, b, theta, ref, credit, torch.tensor(rows), whole_norm).backward()

    g_micro = grad_of(accumulate, theta)

    # DeepSpeed: counts all-reduced by the caller; engine.backward divides by K; DP all-reduce averages.
    ds_norm = Normalizer(whole_norm.total_tokens, whole_norm.total_sequences, whole_norm.max_response_length,
                         dp_world_size=2, grad_accum_steps=2)
    rank_grads = []
    for micro_batches in RANKS:
        def rank_step():
            for rows in micro_batches:
                (micro_loss(algo, b, theta, ref, credit, torch.tensor(rows), ds_norm) / 2).backward()
        rank_grads.append(grad_of(rank_step, theta))
    g_ds = sum(rank_grads) / 2

    assert g_whole.abs().sum() > 0
    scale = g_whole.abs().max()
    assert ((g_micro - g_whole).abs().max() / scale).item() < 1e-6
    assert ((g_ds - g_whole).abs().max() / scale).item() < 1e-6


def test_local_normaliser_would_break_invariance():
    """Sanity: the split test can fail — per-micro-batch token means give a different gradient."""
    b, theta, ref = setup(seed=32)
    algo = build_algorithm({"name": "dapo"})
    credit = algo.shape_credit(b["advantages"], b["entropy"], b["old_logprobs"], b["mask"], b["group_ids"])
    whole = algo.normalizer(b["mask"])
    g_whole = grad_of(lambda: micro_loss(algo, b, theta, ref, credit, torch.arange(12), whole).backward(), theta)

    def local():
        for rows in ([0, 1], [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]):
            r = torch.tensor(rows)
            (micro_loss(algo, b, theta, ref, credit, r, algo.normalizer(b["mask"][r])) / 2).backward()

    g_local = grad_of(local, theta)
    assert ((g_local - g_whole).abs().max() / g_whole.abs().max()).item() > 1e-3
