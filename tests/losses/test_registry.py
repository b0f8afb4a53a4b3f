import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

import losses
from core.config_files import compose_option, options
from losses import algorithm_defaults, build_algorithm, known_algorithms
from losses.algorithms.grpo import DAPO
from losses.config import AlgorithmConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "algorithm"
REQUIRED = ["eapo", "grpo", "dapo", "dr_grpo", "gspo", "forking", "entroadv", "entroreg", "kl_cov", "clip_cov",
            "w_reinf", "a3po", "quadrant_phr", "quadrant_plr", "quadrant_nlr", "quadrant_nhr"]
ALGORITHM_FILES = [name for name in options("algorithm") if name != "base"]


def load(name):
    """The composed algorithm mapping of configs/algorithm/<name>.yaml (its defaults list followed)."""
    return compose_option("algorithm", name)


def test_every_yaml_builds_and_every_required_name_exists():
    names = ALGORITHM_FILES
    assert set(REQUIRED) <= set(names) == set(known_algorithms())
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
    @losses.register("unit_test_algo")
    class UnitTest(DAPO):
        """Test-only subclass."""

    try:
        # without configs/algorithm/unit_test_algo.yaml every key must be given: the registry holds no values
        with pytest.raises(ValueError, match=r"^advantage_estimator: missing key"):
            build_algorithm({"name": "unit_test_algo"})
        algo = build_algorithm({**algorithm_defaults("dapo"), "name": "unit_test_algo", "clip_high": 0.5})
        assert type(algo) is UnitTest and algo.config.clip_high == 0.5
    finally:
        losses.registry.ALGORITHMS.remove("unit_test_algo")


def test_build_algorithm_by_name_is_the_composed_yaml():
    """``build_algorithm({"name": n})`` (library users, tests) runs with what Hydra composes for
    ``algorithm=n`` (the equality of the two compositions is tests/test_config_files.py's)."""
    for name in ALGORITHM_FILES:
        assert dataclasses.asdict(build_algorithm({"name": name}).config) == \
            dataclasses.asdict(build_algorithm(load(name)).config), name
    assert build_algorithm({"name": "quadrant"}).config.quadrants == ("PHR", "NHR")


DATA_KEYS = ("dynamic_sampling", "max_sampling_rounds", "overlong_buffer", "overlong_penalty_factor")
# on the DAPO base (dynamic sampling, overlong shaping), like the paper's runs of them
DAPO_LIKE = ["dapo", "eapo", "eapo_strong", "eapo_mid", "eapo_reversed", "eapo_wo_phr", "eapo_wo_plr", "eapo_wo_nlr",
             "eapo_wo_nhr", "quadrant", "quadrant_phr", "quadrant_plr", "quadrant_nlr", "quadrant_nhr", "forking",
             "entroadv", "a3po"]


def test_dapo_data_keys_per_algorithm():
    for name in known_algorithms():
        c = build_algorithm({"name": name}).config
        got = tuple(getattr(c, k) for k in DATA_KEYS)
        expected = {**{n: (True, 3, 4, 1.0) for n in DAPO_LIKE}, "w_reinf": (False, 3, 4, 1.0)}  # A = r: no filter
        assert got == expected.get(name, (False, 3, 0, 1.0)), name


def _own_keys(name):
    """(keys the file itself sets, its parent option or None) of configs/algorithm/<name>.yaml."""
    raw = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    parents = [d.split("@")[0] for d in raw.pop("defaults", []) if d != "_self_"]
    own = raw.get("algorithm", raw)
    return own, (parents[0] if parents else None)


def _commented_keys(name):
    lines = [ln.strip() for ln in (CONFIG_DIR / f"{name}.yaml").read_text().splitlines()]
    return {ln.split(":")[0] for i, ln in enumerate(lines)
            if ln and not ln.startswith(("#", "-")) and i and lines[i - 1].startswith("# ")}


def test_every_default_is_written_once_and_documented():
    """base.yaml holds the shared keys, each under its trade-off comment; every algorithm file names one
    parent (base or its family's file) and sets only keys whose value differs from the parent's, or keys
    of its own family (commented where they first appear)."""
    base_fields = [f.name for f in dataclasses.fields(AlgorithmConfig)]
    base, _ = _own_keys("base")
    assert list(base) == base_fields
    assert set(base_fields) - {"name"} <= _commented_keys("base")
    for name in ALGORITHM_FILES:
        own, parent = _own_keys(name)
        assert parent is not None, f"{name}.yaml has no parent in its defaults list"
        inherited = load(parent)
        for key, value in own.items():
            if key in inherited and key != "name":
                assert value != inherited[key], f"{name}.yaml repeats {key}={value!r} of {parent}.yaml"
        first_seen = set(own) - set(inherited) - {"name"}
        assert first_seen <= _commented_keys(name), (name, first_seen - _commented_keys(name))
        fields = {f.name for f in dataclasses.fields(build_algorithm(load(name)).config)}
        assert set(load(name)) == fields, name


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
