"""Everything the job prepares before the stream starts: policy, prompt source, held-out set, Ray.

All of it fails fast and cheaply: the policy and the data are checked before any Ray actor,
vLLM engine or DeepSpeed engine is created.
"""
from __future__ import annotations

import hashlib
import json
import os

from core.config import Config
from core.locks import exclusive
from core.stages import HeldoutSet
from core.typed import ConfigError

from pipeline.data import DataError, SourceInfo, inspect_source, normalise_row


def say(msg: str) -> None:
    print(f"[pipeline] {msg}", flush=True)


def policy_location(cfg: Config) -> str:
    """The initial policy's checkpoint: ``model.path``, or where the tiny policy's warm start for these
    settings (``model.tiny``, ``task``, ``warm_start``, ``seed``) is cached under ``model.cache_dir``."""
    if cfg.model.kind != "tiny":
        return cfg.model.path
    from task.warm_start import warm_start_path

    return warm_start_path(_warm_start_dir(cfg), cfg.model.tiny, cfg.task, cfg.warm_start, cfg.seed)


def _warm_start_dir(cfg: Config) -> str:
    return os.path.join(cfg.model.cache_dir, "warm_start")


def prepare_policy(cfg: Config):
    """(initial checkpoint path, tokenizer): the cached warm-started tiny policy (built on first use) or
    ``model.path`` (checked: a Hugging Face checkpoint whose context holds ``rollout.max_model_len``)."""
    from transformers import AutoTokenizer

    if cfg.model.kind == "tiny":
        from task.warm_start import warm_started_policy

        path = warm_started_policy(_warm_start_dir(cfg), cfg.model.tiny, cfg.task, cfg.warm_start, cfg.seed, log=say)
    else:
        path = cfg.model.path
        config_json = os.path.join(path, "config.json")
        if not os.path.exists(config_json):
            raise ConfigError("model.path", f"{path!r} is not a Hugging Face checkpoint (no config.json)")
        with open(config_json) as f:
            context = json.load(f).get("max_position_embeddings")
        if context and cfg.rollout.max_model_len > context:
            raise ConfigError("rollout.max_model_len", f"{cfg.rollout.max_model_len} exceeds the checkpoint's "
                                                       f"max_position_embeddings={context} ({config_json})")
    return path, AutoTokenizer.from_pretrained(path)


def _synthetic_dir(cfg: Config) -> str:
    key = hashlib.sha256(json.dumps([cfg.task.__dict__, cfg.seed]).encode()).hexdigest()[:12]
    return os.path.join(cfg.model.cache_dir, "synthetic", key)


def synthetic_problems(cfg: Config) -> list:
    """The synthetic task's training problems (``task.num_train_prompts`` of ``task.digits``-digit operands
    from the train split, ``task.heldout_fraction`` reserved), drawn with ``seed``."""
    from task.synthetic import sample_problems

    t = cfg.task
    return sample_problems(t.num_train_prompts, cfg.seed + 1, t.digits, "train", t.heldout_fraction)


def source_spec(cfg: Config) -> tuple[str, str, str, str]:
    """(uri, format, prompt field, answer field) of the training prompts: the synthetic parquet under
    ``model.cache_dir`` (RLVR layout) or ``data.path`` (relative paths made absolute), read as
    ``data.format`` with the fields ``data.prompt_key`` / ``data.answer_key``."""
    d = cfg.data
    if d.source == "synthetic":
        uri = os.path.join(_synthetic_dir(cfg), "train.parquet")
    else:
        uri = d.path if "://" in d.path or os.path.isabs(d.path) else os.path.abspath(d.path)
    return uri, d.format, d.prompt_key, d.answer_key


def prepare_source(cfg: Config, tokenizer) -> SourceInfo:
    """The training prompt source (:func:`source_spec`), checked with pyarrow (synthetic prompts are
    written first)."""
    uri, fmt, prompt_key, answer_key = source_spec(cfg)
    if cfg.data.source == "synthetic":
        from task.synthetic import write_parquet

        if not os.path.exists(uri):
            with exclusive(uri + ".lock"):  # runs sharing the cache (a study) write it once
                if not os.path.exists(uri):
                    write_parquet(synthetic_problems(cfg), uri + ".tmp")
                    os.replace(uri + ".tmp", uri)
        return inspect_source(uri, fmt, prompt_key, answer_key)
    info = inspect_source(uri, fmt, prompt_key, answer_key)
    if info.empty_answers:
        say(f"WARNING: {info.empty_answers} of {info.num_rows} rows of {uri} have an empty answer "
            f"({cfg.data.answer_key!r}, data.answer_key): they are dropped")
    return info


def heldout_set(cfg: Config, tokenizer) -> HeldoutSet:
    """Held-out problems never trained on: synthetic ones from the task's held-out split, or the first
    ``heldout.size`` usable rows of ``heldout.path`` (data.source=files; same columns as the training data)."""
    if cfg.heldout.size == 0:
        return HeldoutSet([], [])
    if cfg.data.source == "files":
        return _heldout_from_file(cfg, tokenizer)
    from task.synthetic import sample_problems

    t = cfg.task
    problems = sample_problems(cfg.heldout.size, cfg.seed + 2, t.digits, "heldout", t.heldout_fraction)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p.question}], tokenize=True,
                                             add_generation_prompt=True, return_dict=False) for p in problems]
    return HeldoutSet([list(map(int, p)) for p in prompts], [str(p.answer) for p in problems])


def _heldout_from_file(cfg: Config, tokenizer) -> HeldoutSet:
    """Rows of ``heldout.path`` (checked like the training data), templated and tokenised in this process."""
    import pyarrow.dataset as pads

    d, h = cfg.data, cfg.heldout
    uri = h.path if "://" in h.path or os.path.isabs(h.path) else os.path.abspath(h.path)
    info = inspect_source(uri, d.format, d.prompt_key, d.answer_key, role="heldout")
    heads = sorted({d.prompt_key.split(".")[0], d.answer_key.split(".")[0]})
    rows = pads.dataset(uri, format="json" if info.format == "jsonl" else "parquet").to_table(columns=heads)
    prompts, golds, dropped = [], [], 0
    for i, row in enumerate(rows.to_pylist()):
        if len(golds) == h.size:
            break
        result = normalise_row(row, tokenizer, d.prompt_key, d.answer_key, d.prompt_suffix, d.max_prompt_tokens,
                               f"{uri}: row {i + 1}")
        if isinstance(result, str):
            dropped += 1
            continue
        prompts.append(result[1])
        golds.append(result[2])
    if not golds:
        raise DataError(f"{uri}: no usable held-out problem (heldout.path): {dropped} rows dropped "
                        f"(empty answer or longer than data.max_prompt_tokens={d.max_prompt_tokens})")
    say(f"held-out set: {len(golds)} problems from {uri}" + (f" ({dropped} rows dropped: empty answer or longer "
                                                             f"than data.max_prompt_tokens)" if dropped else ""))
    return HeldoutSet(prompts, golds)


def ray_worker_setup() -> None:
    """Ray ``worker_process_setup_hook`` of every process of the run (see :func:`init_ray`).

    Ray Data's scheduling loop waits up to ``WAIT_FOR_TASK_COMPLETION_TIMEOUT_S`` = 0.1 s for *all* its
    running tasks before it moves finished blocks on; the rollout actor's next task is always running
    (waiting for weights), so every finished shard sat up to 0.1 s per operator hop before the trainer
    saw it: ~0.3 s of every on-policy step. ``EAPO_DATA_POLL_S`` (``rollout.stream_poll_s``) shortens
    the wait in the process that runs the stream's executor (Ray Train's split coordinator).

    ``RAY_ADDRESS`` is set to this cluster's GCS when unset: Ray Train's own actors (its placement-group
    cleaner) query the state API with no address, which fails with "Found multiple active Ray instances"
    when two local runs share the machine (a study with ``max_concurrent`` 2) and kills their monitor thread.
    """
    import ray

    if not os.environ.get("RAY_ADDRESS") and ray.is_initialized():  # outside Ray: nothing to pin
        os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    value = os.environ.get("EAPO_DATA_POLL_S")
    if value:
        import ray.data._internal.execution.streaming_executor_state as executor_state

        executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S = float(value)


def ray_init_kwargs(cfg: Config) -> dict:
    """``ray.init`` arguments of the run: attach to ``ray_address``/``RAY_ADDRESS`` if given, else a local Ray
    sized to the machine (dashboard on: Ray Train queries the state API); one namespace per ``run_dir``
    (runs sharing a cluster, a study, never see each other's named actors); ``rollout.stream_poll_s`` for
    every worker process (:func:`ray_worker_setup`). Workers get this checkout on ``PYTHONPATH``: the setup
    hook is imported before the driver's ``sys.path`` reaches a worker, and a worker that cannot import it
    dies and is retried forever (an environment where the project is not installed, or installed elsewhere)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    python_path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p)
    env = {"env_vars": {"PYTHONPATH": python_path, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false",
                        "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
                        "EAPO_DATA_POLL_S": str(cfg.rollout.stream_poll_s)},
           "worker_process_setup_hook": "pipeline.setup.ray_worker_setup"}
    namespace = "eapo-" + hashlib.sha256(cfg.run_dir.encode()).hexdigest()[:12]
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        return {"address": address, "runtime_env": env, "log_to_driver": True, "namespace": namespace}
    # "local": always a new instance; with None, ray.init would attach to whatever `ray start` left running
    return {"address": "local", "num_cpus": os.cpu_count(), "runtime_env": env, "namespace": namespace}


def init_ray(cfg: Config) -> None:
    """Attach to or start Ray (:func:`ray_init_kwargs`), unless this process already did."""
    import ray

    if ray.is_initialized():
        return
    kwargs = ray_init_kwargs(cfg)
    if kwargs.get("address") == "local":  # this process owns the new Ray: none of it may outlive this process
        from pipeline.reaper import watch

        watch()
    ray.init(**kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    # rollout shards travel as python objects on purpose (nested, ragged): say so, and Ray Data stops
    # warning that it could not convert them to Arrow (measured: no hand-off cost over Arrow columns)
    ctx.enable_fallback_to_arrow_object_ext_type = True
