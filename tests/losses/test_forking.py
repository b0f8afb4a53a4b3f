"""Forking tokens (arXiv 2506.01939): the global top-ρ entropy mask, single-process and over a real
2-process gloo group, against a float64 loop over the concatenated batch (ties included)."""
import math
from fractions import Fraction

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from losses import build_algorithm
from losses.algorithms.forking import top_count, top_entropy_mask

RATIOS = (0.2, 0.5, 0.07, 1.0)


def loop_top_mask(entropy, mask, ratio):
    """[B][T] bools: the max(1, ⌈ρ·N⌉) highest-entropy response tokens (exact decimal ⌈⌉); ties by
    row-major position, earlier first; NaN ranks lowest."""
    cells = [(i, t) for i in range(len(mask)) for t in range(len(mask[0])) if mask[i][t]]
    vals = [-math.inf if math.isnan(entropy[i][t]) else entropy[i][t] for i, t in cells]
    n = len(cells)
    k = min(n, max(1, math.ceil(Fraction(str(ratio)) * n))) if n else 0
    chosen = {cells[j] for j in sorted(range(n), key=lambda j: (-vals[j], j))[:k]}
    return [[(i, t) in chosen for t in range(len(mask[0]))] for i in range(len(mask))]


def tied_batch(seed, B=12, T=9):
    """Entropies on a coarse grid (many ties), NaN padding, one empty row, varying lengths."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[3] = 0
    mask = torch.arange(T)[None, :] < lengths[:, None]
    ent = torch.round(torch.rand(B, T, generator=g, dtype=torch.float64) * 6) / 2
    ent[~mask] = float("nan")
    ent[0, 0] = float("nan") if mask[0, 0] else ent[0, 0]  # a NaN response token ranks lowest
    adv = torch.randn(B, generator=g, dtype=torch.float64)[:, None] * mask
    return ent, mask, adv


SPLITS = {"even": 6, "uneven": 5, "rank1_empty": 12}  # rows [0, s) on rank 0, [s, B) on rank 1


def shard(x, split, rank):
    return x[:split] if rank == 0 else x[split:]


def test_top_count_tolerates_rounding():
    assert [top_count(15, 0.2), top_count(10, 0.2), top_count(7, 0.2), top_count(0, 0.2), top_count(3, 1.0)] \
        == [3, 2, 2, 0, 3]


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_process_matches_loop_with_ties(ratio, seed):
    ent, mask, adv = tied_batch(seed)
    got = top_entropy_mask(ent, mask, ratio)
    assert torch.equal(got, torch.tensor(loop_top_mask(ent.tolist(), mask.tolist(), ratio)))
    credit = build_algorithm({"name": "forking", "top_ratio": ratio}).shape_credit(
        adv, ent, torch.zeros_like(ent), mask, torch.arange(12) // 4)
    assert torch.equal(credit.token_weight, got.to(torch.float64))


def _worker(rank, world, init_method, cases, out_path):
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    results = {}
    for key, (ent, mask, adv, ratio) in cases[rank].items():
        algo = build_algorithm({"name": "forking", "top_ratio": ratio})
        credit = algo.shape_credit(adv, ent, torch.zeros_like(ent), mask, torch.arange(len(mask)))
        results[key] = (top_entropy_mask(ent, mask, ratio), credit.token_weight)
    dist.barrier()
    dist.destroy_process_group()
    torch.save(results, f"{out_path}.{rank}")


def test_two_rank_gloo_mask_equals_single_process_mask_over_concatenation(tmp_path):
    world, cases, expected = 2, [{}, {}], {}
    for seed in (0, 1):
        ent, mask, adv = tied_batch(seed)
        for split_name, split in SPLITS.items():
            for ratio in RATIOS:
                key = (seed, split_name, ratio)
                expected[key] = torch.tensor(loop_top_mask(ent.tolist(), mask.tolist(), ratio))
                for rank in range(world):
                    cases[rank][key] = (shard(ent, split, rank), shard(mask, split, rank), shard(adv, split, rank),
                                        ratio)
    empty = torch.zeros(2, 5, dtype=torch.bool)  # no response token on any rank: nothing selected
    expected[("empty",)] = torch.zeros(4, 5, dtype=torch.bool)
    for rank in range(world):
        cases[rank][("empty",)] = (torch.full((2, 5), float("nan"), dtype=torch.float64), empty,
                                   torch.zeros(2, 5, dtype=torch.float64), 0.2)
    mp.spawn(_worker, args=(world, f"file://{tmp_path}/store", cases, str(tmp_path / "out")), nprocs=world,
             join=True)
    got = [torch.load(tmp_path / f"out.{rank}") for rank in range(world)]
    per_rank_differs = cross_rank_ties = False
    for key, want in expected.items():
        split = SPLITS[key[1]] if len(key) > 1 else 2
        mask_cat = torch.cat([got[0][key][0], got[1][key][0]])
        weight_cat = torch.cat([got[0][key][1], got[1][key][1]])
        assert torch.equal(mask_cat, want), key
        assert torch.equal(weight_cat, want.to(weight_cat.dtype)), key
        ent, mask, ratio = cases[0][key][0], cases[0][key][1], cases[0][key][3]
        per_rank_differs |= not torch.equal(top_entropy_mask(ent, mask, ratio), want[:split])
        cross_rank_ties |= _cut_inside_ties_on_both_ranks(key, cases, want, split)
    assert per_rank_differs  # a per-rank threshold would fail this test
    assert cross_rank_ties  # the threshold falls inside a run of ties that spans both ranks


def _cut_inside_ties_on_both_ranks(key, cases, want, split):
    ent = torch.cat([cases[0][key][0], cases[1][key][0]]).nan_to_num(nan=-math.inf)
    mask = torch.cat([cases[0][key][1], cases[1][key][1]])
    if not want.any():
        return False
    v = ent[want].min()
    at_v = mask & (ent == v)
    return bool(at_v[:split].any() and at_v[split:].any() and (at_v & ~want).any() and (at_v & want).any())
