from pathlib import Path

import pytest

import losses
from losses import build_algorithm, known_algorithms
from losses.algorithms.grpo import DAPO

yaml = pytest.importorskip("yaml")
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "algorithm"
REQUIRED = ["eapo", "grpo", "dapo", "dr_grpo", "gspo", "forking", "entroadv", "entroreg", "kl_cov", "clip_cov",
            "w_reinf", "a3po", "quadrant_phr", "quadrant_plr", "quadrant_nlr", "quadrant_nhr"]


def load(name):
    return yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())


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
