"""Configuration: Hydra composition, presets, and errors that name the field before anything starts."""
from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module

from pipeline import config as C
from tests.conftest import REPO


def compose_cfg(*overrides: str):
    with initialize_config_module(config_module="configs", version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def test_default_composes_to_small_cpu_eapo_run():
    cfg = C.load(compose_cfg())
    assert cfg.algorithm.name == "eapo" and cfg.algorithm.alpha == 0.2 and cfg.algorithm.phi == 2.0
    assert cfg.model.kind == "tiny" and cfg.trainer.use_gpu is False and cfg.rollout.staleness == 0


@pytest.mark.parametrize("preset,n,steps,prompts", [("paper_qwen25_math_7b", 8, 220, 512),
                                                     ("paper_deepscaler_1p5b", 16, 900, 64)])
def test_paper_presets_carry_the_paper_settings(preset, n, steps, prompts):
    # GPU presets run on a Ray cluster (ray job submit sets RAY_ADDRESS): its nodes hold the GPUs
    cfg = C.load(compose_cfg(f"preset={preset}", "model.path=/models/x", "ray_address=auto"))
    assert cfg.model.dtype == "bfloat16" and cfg.model.gradient_checkpointing is True  # auto, with GPUs
    assert (cfg.rollout.n, cfg.trainer.total_steps, cfg.trainer.prompts_per_step) == (n, steps, prompts)
    assert cfg.trainer.lr == 1e-6 and cfg.rollout.top_p == 0.95 and cfg.rollout.temperature == 1.0
    assert cfg.algorithm.clip_low == 0.2 and cfg.algorithm.clip_high == 0.28
    assert cfg.algorithm.kl_coef == 0.0
    # mini-batch of 32 prompts per optimizer step
    assert cfg.trainer.prompts_per_step // cfg.trainer.mini_batches_per_step == 32


@pytest.mark.parametrize("algorithm", ["dapo", "eapo_strong", "eapo_reversed", "quadrant_phr"])
def test_the_study_preset_is_the_papers_loss_regime_on_cpu(algorithm):
    """preset=study: several optimizer steps per RL step (the separate update path: the ratio moves, clipping acts),
    every arm on the DAPO base, the manipulation checks on, noisy digit facts and free letters in the warm start,
    responses that fit the budget."""
    from actors.update import fused
    from losses import build_algorithm

    cfg = C.load(compose_cfg("preset=study", f"algorithm={algorithm}"))
    assert cfg.trainer.mini_batches_per_step > 1 and not fused(cfg, build_algorithm(cfg.algorithm), 32)
    assert cfg.algorithm.dynamic_sampling and cfg.algorithm.clip_high == 0.28 and cfg.trainer.grad_check_every == 1
    assert cfg.warm_start.fact_noise > 0 and cfg.model.kind == "tiny" and not cfg.trainer.use_gpu
    assert cfg.warm_start.free_letters == 8 and cfg.rollout.max_tokens == cfg.heldout.max_tokens == 64



@pytest.mark.parametrize("preset,max_tokens,buffer", [("paper_qwen25_math_7b", 3072, 614),
                                                      ("paper_deepscaler_1p5b", 24576, 4915)])
def test_paper_presets_scale_the_overlong_buffer_and_correct_for_top_p(preset, max_tokens, buffer):
    """DAPO's overlong buffer (4096 of 20480 = 0.2) scaled to the preset's response budget for algorithms with
    overlong shaping, none added to one without; TIS on by default, because top-p 0.95 truncates the distribution
    the engine samples from (the trainer's is the full softmax), though the rollout is on-policy."""
    from actors.update import is_correction_on

    run = ("model.path=/models/x", "ray_address=auto")
    for algorithm in ("eapo", "dapo"):
        cfg = C.load(compose_cfg(f"preset={preset}", f"algorithm={algorithm}", *run))
        assert (cfg.rollout.max_tokens, cfg.algorithm.overlong_buffer) == (max_tokens, buffer)
        assert cfg.rollout.staleness == 0 and cfg.rollout.top_p < 1 and cfg.trainer.is_correction == "auto"
        assert is_correction_on(cfg)
    assert C.load(compose_cfg(f"preset={preset}", "algorithm=grpo", *run)).algorithm.overlong_buffer == 0
    assert C.load(compose_cfg(f"preset={preset}", "rollout.max_tokens=2000", "rollout.max_model_len=8192",
                              *run)).algorithm.overlong_buffer == 400  # follows the budget
    assert C.load(compose_cfg(f"preset={preset}", "algorithm.overlong_buffer=0", *run)).algorithm.overlong_buffer == 0
    assert not is_correction_on(C.load(compose_cfg(f"preset={preset}", "trainer.is_correction=false", *run)))


def test_is_correction_auto_is_on_when_the_behaviour_distribution_differs():
    from actors.update import is_correction_on

    assert not is_correction_on(C.load(compose_cfg()))  # on-policy, top-p 1: mu = pi_old
    assert is_correction_on(C.load(compose_cfg("rollout.staleness=1")))
    assert is_correction_on(C.load(compose_cfg("rollout.top_p=0.9")))


def test_overrides_select_algorithm_and_sizes():
    cfg = C.load(compose_cfg("algorithm=grpo", "rollout.n=4", "trainer.zero_stage=2"))
    assert cfg.algorithm.name == "grpo" and cfg.rollout.n == 4 and cfg.trainer.zero_stage == 2


@pytest.mark.parametrize("override,field", [
    ("rollout.n=-2", "rollout.n"),
    ("trainer.prompts_per_step=0", "trainer.prompts_per_step"),
    ("trainer.zero_stage=5", "trainer.zero_stage"),
    ("rollout.temperature=0", "rollout.temperature"),
    ("rollout.num_actors=3", "trainer.prompts_per_step"),
    ("trainer.micro_batch_size=48", "trainer.micro_batch_size"),
    ("+trainer.learning_rate=1", "learning_rate"),
    ("rollout.n=abc", "rollout.n"),
    ("algorithm.clip_low=-1", "clip_low"),
    ("periodic_eval.benchmarks=[nope]", "periodic_eval.benchmarks"),
    ("periodic_eval.k=4", "periodic_eval.k"),
])
def test_invalid_values_name_the_field(override, field):
    with pytest.raises(C.ConfigError, match=field.replace(".", r"\.")):
        C.load(compose_cfg(override))


def test_unknown_algorithm_fails_before_start_with_known_names():
    proc = subprocess.run([sys.executable, "-m", "pipeline.run", "algorithm.name=nope", "run_dir=/tmp/eapo-never"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "nope" in proc.stderr and "eapo" in proc.stderr


def test_w_reinf_brings_the_signed_reward_convention_and_rejects_0_1():
    cfg = C.load(compose_cfg("algorithm=w_reinf"))
    assert (cfg.rollout.reward_correct, cfg.rollout.reward_wrong) == (1.0, -1.0)
    with pytest.raises(C.ConfigError, match=r"rollout\.reward_wrong.*w_reinf"):
        C.load(compose_cfg("algorithm=w_reinf", "rollout.reward_wrong=0"))
    # the convention stays with W-REINF: other algorithms keep 0/1
    assert C.load(compose_cfg("algorithm=grpo")).rollout.reward_wrong == 0.0


def test_algorithm_keys_are_resolved_and_dapo_is_the_papers():
    dapo = C.load(compose_cfg("algorithm=dapo")).algorithm
    assert dapo.dynamic_sampling is True and dapo.overlong_buffer > 0 and dapo.clip_high == 0.28
    grpo = C.load(compose_cfg("algorithm=grpo")).algorithm
    assert grpo.dynamic_sampling is False and grpo.overlong_buffer == 0
    # a key the YAML omits still arrives with its registry default
    eapo = C.load(compose_cfg("~algorithm.max_sampling_rounds")).algorithm
    assert eapo.max_sampling_rounds == 3


def test_overlong_buffer_must_fit_the_response_budget():
    with pytest.raises(C.ConfigError, match=r"algorithm\.overlong_buffer.*rollout\.max_tokens=8"):
        C.load(compose_cfg("algorithm=dapo", "rollout.max_tokens=8", "algorithm.overlong_buffer=9"))


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EAPO_CACHE_DIR", str(tmp_path))
    assert C.load(compose_cfg()).model.cache_dir == str(tmp_path)


# ---- every setting works or is rejected before Ray starts, naming its key(s) ----

@pytest.mark.parametrize("overrides,key,also", [
    (["trainer.keep_checkpoints=0"], "trainer.keep_checkpoints", None),
    (["rollout.verifier_timeout_s=-1"], "rollout.verifier_timeout_s", None),
    (["rollout.kv_cache_gb=0"], "rollout.kv_cache_gb", None),
    (["algorithm=grpo", "rollout.n=1"], "rollout.n", "advantage_estimator='grpo'"),
    (["algorithm=dr_grpo", "rollout.n=1", "trainer.micro_batch_size=16"], "rollout.n", "dr_grpo"),
    (["algorithm.kl_coef=0.1", "trainer.zero_stage=3", "trainer.grad_check_every=0"], "algorithm.kl_coef",
     "trainer.zero_stage=3"),
    (["trainer.zero_stage=3"], "trainer.grad_check_every", "trainer.zero_stage=3"),
    (["data.max_prompt_tokens=240"], "rollout.max_tokens", "rollout.max_model_len=256"),
    (["heldout.max_tokens=200"], "heldout.max_tokens", "rollout.max_model_len=256"),
    (["data.path=/data/train.parquet"], "data.path", "data.source=synthetic"),
    (["model.path=/models/x"], "model.path", "model=pretrained"),
    (["data=math_train", "rollout.max_model_len=2048", "model.tiny.max_position_embeddings=2048"],
     "heldout.path", "heldout.size=256"),
    (["heldout.path=/data/heldout.parquet"], "heldout.path", "data.source=synthetic"),
    (["algorithm.max_response_length=0"], "algorithm.max_response_length", None),
    (["model.dtype=float16"], "model.dtype", None),
    (["model.gradient_checkpointing=sometimes"], "model.gradient_checkpointing", None),
    (["rollout.max_model_len=1024"], "rollout.max_model_len", "model.tiny.max_position_embeddings=512"),
    (["model.tiny.num_heads=3"], "model.tiny.num_heads", None),
    (["rollout.reward_correct=0"], "rollout.reward_correct", "rollout.reward_wrong"),
    (["seed=-1"], "seed", None),
    (["algorithm=base"], "algorithm.name", None),
    (["+rollout.kv_cache_mb=256"], "rollout.kv_cache_mb", "unknown key"),
    (["~trainer.lr"], "trainer.lr", "missing key"),
])
def test_invalid_settings_are_rejected_naming_the_keys(overrides, key, also):
    with pytest.raises(C.ConfigError) as info:
        C.load(compose_cfg(*overrides))
    assert info.value.key == key, str(info.value)
    assert also is None or also in str(info.value)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks a machine without GPUs")
@pytest.mark.parametrize("override,key", [("trainer.use_gpu=true", "trainer.use_gpu"),
                                          ("rollout.gpus_per_actor=1", "rollout.gpus_per_actor")])
def test_gpus_that_this_machine_lacks_are_rejected_unless_a_cluster_is_given(override, key):
    with pytest.raises(C.ConfigError) as info:
        C.load(compose_cfg(override))
    assert info.value.key == key and "no GPU" in str(info.value)
    C.load(compose_cfg(override, "ray_address=auto"))  # a cluster's nodes may hold them


@pytest.mark.parametrize("backend", ["nccl", "ipc"])
def test_gpu_weight_transfer_backends_are_refused_with_one_line_naming_the_key(backend):
    key = "rollout.weight_transfer"
    gpus = ["trainer.use_gpu=true", "rollout.gpus_per_actor=1"]
    if not __import__("torch").cuda.is_available():
        with pytest.raises(C.ConfigError) as info:
            C.load(compose_cfg(f"{key}={backend}"))
        assert info.value.key == key and "no GPU" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(C.ConfigError) as info:  # a cluster may hold GPUs, but the stages must ask for them
        C.load(compose_cfg(f"{key}={backend}", "ray_address=auto"))
    assert info.value.key == key and "trainer.use_gpu=true and rollout.gpus_per_actor > 0" in str(info.value)
    with pytest.raises(C.ConfigError) as info:  # with GPUs: known, but not wired to the rollout actor pool yet
        C.load(compose_cfg(f"{key}={backend}", "ray_address=auto", *gpus))
    assert info.value.key == key and "not wired yet; use object_store" in str(info.value)
    assert C.load(compose_cfg(f"{key}=object_store", "ray_address=auto", *gpus)).rollout.weight_transfer == "object_store"


def test_pretrained_defaults_are_cpu_sane_without_gpus():
    cfg = C.load(compose_cfg("model=pretrained", "model.path=/models/x", "data=math_train", "heldout.size=0",
                             "rollout.max_model_len=2048"))
    assert cfg.model.dtype == "float32" and cfg.model.gradient_checkpointing is False and cfg.model.tiny is None


def test_file_data_with_a_heldout_file_and_a_consistent_budget_loads():
    cfg = C.load(compose_cfg("model=pretrained", "model.path=/models/x", "data=math_train", "rollout.max_model_len=2048",
                             "heldout.path=/data/heldout.parquet"))
    assert cfg.data.source == "files" and cfg.heldout.path == "/data/heldout.parquet"


def test_config_errors_end_the_job_with_one_line_and_exit_code_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline.run", "rollout.kv_cache_gb=0", f"run_dir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: rollout.kv_cache_gb: must be > 0, got 0.0"]
