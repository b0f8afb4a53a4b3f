"""Reference loops (plain Python over i, t) shared by several test modules."""
import math


def loop_group_stats(entropy, mask, group_ids, i):
    """Mean and population std of H over all response tokens of row i's group (plain loops)."""
    vals = [entropy[j][t] for j in range(len(group_ids)) if group_ids[j] == group_ids[i]
            for t in range(len(mask[j])) if mask[j][t]]
    if not vals:
        return 0.0, 0.0
    mu = sum(vals) / len(vals)
    return mu, math.sqrt(sum((v - mu) ** 2 for v in vals) / len(vals))


def loop_quadrant_of(adv, ent, mask, gid):
    """[B][T] quadrant names from plain loops; None on padding and on Â = 0 tokens (no quadrant)."""
    out = [[None] * len(adv[0]) for _ in adv]
    for i in range(len(adv)):
        mu, sd = loop_group_stats(ent, mask, gid, i)
        for t in range(len(adv[0])):
            if mask[i][t] and adv[i][t] != 0:
                high = ent[i][t] >= mu or sd < 1e-8
                out[i][t] = ("P" if adv[i][t] > 0 else "N") + ("H" if high else "L") + "R"
    return out
