"""``core.config_files`` (the reader library code uses outside a Hydra app) composes exactly what Hydra does."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from core.config_files import compose_option, compose_option_global, options


def hydra_compose(*overrides: str) -> dict:
    with initialize_config_module(config_module="configs", version_base=None):
        return OmegaConf.to_container(compose(config_name="config", overrides=list(overrides)), resolve=False)


def leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("group", ["algorithm", "model"])
def test_every_option_composes_as_in_hydra(group):
    for name in options(group):
        if name == "base":  # the shared keys, not an option one selects (its name is ???)
            continue
        composed = hydra_compose(f"{group}={name}")
        assert compose_option(group, name) == composed[group], name
        # keys a `# @package _global_` option sets elsewhere (w_reinf: rollout.reward_wrong) land as in Hydra
        everywhere = leaves(composed)
        for key, value in leaves(compose_option_global(group, name)).items():
            assert everywhere[key] == value, (name, key)


def test_unsupported_defaults_entries_are_refused(tmp_path, monkeypatch):
    import core.config_files as F

    (tmp_path / "algorithm").mkdir()
    (tmp_path / "algorithm" / "odd.yaml").write_text("defaults:\n  - /model: tiny\n  - _self_\nname: odd\n")
    monkeypatch.setattr(F, "CONFIG_DIR", tmp_path)
    F._compose_cached.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"odd\.yaml: defaults entry .*not supported"):
            F.compose_option("algorithm", "odd")
    finally:
        F._compose_cached.cache_clear()


@pytest.mark.parametrize("app,overrides", [("eval", ["model=m"]), ("serve", [])])
def test_eval_and_serve_libraries_read_the_values_their_apps_compose(app, overrides):
    """``to_eval_config({...})`` / ``to_serve_config({...})`` (library use) equal the Hydra apps' config."""
    from hydra import initialize_config_dir

    from core.config_files import CONFIG_DIR
    from core.typed import build
    from evaluation.config import EvalConfig, to_eval_config
    from serve.config import RUN_ONLY_KEYS, ServeConfig, to_serve_config

    with initialize_config_dir(config_dir=str(CONFIG_DIR / app), version_base=None):
        composed = OmegaConf.to_container(compose(config_name=app, overrides=overrides), resolve=True)
    given = dict(o.split("=", 1) for o in overrides)
    if app == "eval":
        assert to_eval_config(given) == build(EvalConfig, composed)
    else:
        assert to_serve_config(given) == build(ServeConfig, {k: v for k, v in composed.items() if k not in RUN_ONLY_KEYS})
