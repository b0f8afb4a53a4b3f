import dataclasses
from pathlib import Path

import pytest
import torch

import losses
from losses import build_algorithm, known_algorithms
from losses.algorithms.grpo import DAPO
from losses.config import AlgorithmConfig

yaml = pytest.importorskip("yaml")
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "algorithm"
REQUIRED = ["eapo", "grpo", "dapo", "dr_grpo", "gspo", "forking", "entroadv", "entroreg", "kl_cov", "clip_cov",
            "w_reinf", "a3po", "quadrant_phr", "quadrant_plr", "quadrant_nlr", "quadrant_nhr"]


def load(name):
    """The algorithm mapping of configs/algorithm/<name>.yaml (a `# @package _global_` file nests it
    under `algorithm:` and may set other groups' keys, e.g. w_reinf's +-1 rewards)."""
    raw = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    return raw["algorithm"] if "algorithm" in raw else raw


def algorithm_lines(path):
    """Lines of the algorithm mapping (dedented block under `algorithm:` for a global-package file)."""
    lines = path.read_text().splitlines()
    if "algorithm:" not in lines:
        return lines
    block = lines[lines.index("algorithm:") + 1:]
    end = next((i for i, ln in enumerate(block) if ln and not ln.startswith(" ")), len(block))
    return [ln[2:] for ln in block[:end]]


def test_every_yaml_builds_and_every_required_name_exists():
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert set(REQUIRED) <= set(names) <= set(known_algorithms())
    for name in names:
        cfg = load(name)
        assert cfg["name"] == name
        algo = build_algorithm(cfg)
        assert type(algo).__doc__ and "arXiv" in type(algo).__doc__, name


def test_eapo_defaults_follow_the_spec():
    c = build_algorithm(load("eapo")).config
    assert (c.alpha, c.phi, c.clip_low, c.clip_high, c.aggregation) == (0.2, 2.0, 0.2, 0.28, "token_mean")
    assert (c.kl_coef, c.dual_clip, c.without_quadrants, c.adv_eps) == (0.0, None, (), 1e-6)
    g = build_algorithm(load("grpo")).config
    assert (g.clip_low, g.clip_high, g.aggregation) == (0.2, 0.2, "seq_mean_token_mean")


def test_unknown_name_lists_known():
    with pytest.raises(ValueError, match="name: unknown algorithm 'nope'.*eapo"):
        build_algorithm({"name": "nope"})
    with pytest.raises(ValueError, match="name"):
        build_algorithm({"alpha": 0.2})


@pytest.mark.parametrize("cfg,field", [
    ({"name": "eapo", "clip_low": -0.1}, "clip_low"),
    ({"name": "eapo", "clip_hihg": 0.3}, "clip_hihg"),
    ({"name": "eapo", "phi": 0}, "phi"),
    ({"name": "eapo", "alpha": 3.0}, "alpha"),
    ({"name": "eapo", "without_quadrants": ["XYZ"]}, "without_quadrants"),
    ({"name": "grpo", "aggregation": "mean"}, "aggregation"),
    ({"name": "grpo", "kl_estimator": "k4"}, "kl_estimator"),
    ({"name": "grpo", "dual_clip": 0.5}, "dual_clip"),
    ({"name": "grpo", "advantage_estimator": "ppo"}, "advantage_estimator"),
    ({"name": "grpo", "kl_coef": "abc"}, "kl_coef"),
    ({"name": "forking", "top_ratio": 0.0}, "top_ratio"),
    ({"name": "a3po", "rank_by": "logit"}, "rank_by"),
    ({"name": "a3po", "pos_low_fraction": 1.5}, "pos_low_fraction"),
    ({"name": "a3po", "neg_high_scale": -1.0}, "neg_high_scale"),
    ({"name": "a3po", "neg_weight": -0.1}, "neg_weight"),
    ({"name": "a3po", "scale_decay": "cosine"}, "scale_decay"),
    ({"name": "a3po", "decay_end": 0.0}, "decay_end"),
    ({"name": "a3po", "top_fraction": 0.2}, "top_fraction"),  # the old single pair is gone
    ({"name": "quadrant_phr", "quadrants": []}, "quadrants"),
    ({"name": "clip_cov", "clip_cov_lb": 5.0, "clip_cov_ub": 1.0}, "clip_cov_ub"),
    ({"name": "dapo", "dynamic_sampling": "yes"}, "dynamic_sampling"),
    ({"name": "dapo", "dynamic_sampling": 1}, "dynamic_sampling"),
    ({"name": "dapo", "max_sampling_rounds": -1}, "max_sampling_rounds"),
    ({"name": "dapo", "max_sampling_rounds": 1.5}, "max_sampling_rounds"),
    ({"name": "dapo", "overlong_buffer": -4}, "overlong_buffer"),
    ({"name": "dapo", "overlong_buffer": 2.5}, "overlong_buffer"),
    ({"name": "eapo", "overlong_penalty_factor": -1.0}, "overlong_penalty_factor"),
    ({"name": "eapo", "overlong_penalty_factor": "abc"}, "overlong_penalty_factor"),
])
def test_invalid_config_names_the_field(cfg, field):
    with pytest.raises(ValueError, match=f"^{field}"):
        build_algorithm(cfg)


def test_string_numbers_and_omegaconf():
    assert build_algorithm({"name": "eapo", "adv_eps": "1e-6"}).config.adv_eps == 1e-6
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"name": "eapo_wo_phr", "without_quadrants": ["PHR", "NLR"]})
    assert build_algorithm(cfg).config.without_quadrants == ("PHR", "NLR")


def test_register_new_algorithm_without_touching_the_registry():
    @losses.register("unit_test_algo", clip_high=0.5)
    class UnitTest(DAPO):
        """Test-only subclass."""

    assert build_algorithm({"name": "unit_test_algo"}).config.clip_high == 0.5


DATA_KEYS = ("dynamic_sampling", "max_sampling_rounds", "overlong_buffer", "overlong_penalty_factor")
DAPO_LIKE = ["dapo", "eapo", "eapo_wo_phr", "eapo_wo_plr", "eapo_wo_nlr", "eapo_wo_nhr"]


def test_dapo_data_keys_per_algorithm():
    for name in known_algorithms():
        c = build_algorithm({"name": name}).config
        got = tuple(getattr(c, k) for k in DATA_KEYS)
        assert got == ((True, 3, 4, 1.0) if name in DAPO_LIKE else (False, 3, 0, 1.0)), name


def test_every_yaml_agrees_with_its_registry_base_keys_and_lists_every_key_with_a_comment():
    """A YAML may pick family keys of its own (it overrides the registry preset by design), but the shared
    base keys must agree with the registry preset, so `build_algorithm({"name": ...})` and the YAML run
    the same DAPO data side; every YAML repeats all keys of its config (the base keys first), each under
    a comment line."""
    base = [f.name for f in dataclasses.fields(AlgorithmConfig)]
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        from_yaml = build_algorithm(load(path.stem)).config
        from_registry = build_algorithm({"name": path.stem}).config
        for key in base:
            assert getattr(from_yaml, key) == getattr(from_registry, key), (path.stem, key)
        lines = algorithm_lines(path)
        keys = [ln.split(":")[0] for ln in lines if ln and not ln.startswith("#")]
        assert keys == [f.name for f in dataclasses.fields(from_yaml)], path.stem
        for i, ln in enumerate(lines):
            if ln and not ln.startswith("#") and not ln.startswith("name:"):
                assert lines[i - 1].startswith("# "), (path.stem, ln)


def test_group_local_credit_is_the_same_shaped_per_chunk_of_whole_groups():
    """``credit_is_group_local`` is what lets the trainer shape credit per micro-batch of whole groups."""
    from tests.losses.conftest import make_batch

    b = make_batch(seed=11, B=12, T=6, G=3)
    chunks = [slice(0, 6), slice(6, 12)]  # two chunks of two groups each
    for name in known_algorithms():
        algo = build_algorithm({"name": name})
        algo.begin_step(3, 10)
        args = (b["advantages"], b["entropy"], b["old_logprobs"], b["mask"], b["group_ids"])
        whole = algo.shape_credit(*args)
        parts = [algo.shape_credit(*(a[c] for a in args)) for c in chunks]
        same = all(torch.equal(torch.cat([getattr(p, f) for p in parts]), getattr(whole, f))
                   for f in ("advantages", "token_weight"))
        if algo.credit_is_group_local:
            assert same, name
        if name == "forking":
            assert not same and not algo.credit_is_group_local
