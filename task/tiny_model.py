"""A tiny Qwen2-architecture policy and a byte-level BPE tokenizer, built locally.

Nothing here downloads anything: the tokenizer is trained on a small synthetic corpus
(arithmetic problems plus generic math text, so arbitrary text still tokenizes through
byte fallback) and the model is randomly initialised. The result is a plain Hugging Face
checkpoint directory (config.json, model.safetensors, tokenizer files, generation_config)
that ``transformers`` and vLLM load as they are.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict

from core.config import TinyModelConfig
from core.config_files import compose_option
from core.typed import build
from task.synthetic import tokenizer_corpus

EOS = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_spec(**overrides) -> TinyModelConfig:
    """The tiny policy's size: ``model.tiny`` of configs/model/tiny.yaml with ``overrides`` applied
    (e.g. ``tiny_spec(hidden_size=64, num_layers=2)`` for a smaller test model)."""
    return build(TinyModelConfig, {**compose_option("model", "tiny")["tiny"], **overrides}, "model.tiny")


def build_tokenizer(out_dir: str, vocab_size: int = 512):
    """Train a byte-level BPE tokenizer (digits split individually) and save it to ``out_dir``.

    Returns the ``PreTrainedTokenizerFast``. Special tokens: ``<|endoftext|>`` (eos and pad),
    ``<|im_start|>``, ``<|im_end|>``; a Qwen-style chat template is attached.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, bos_token=None, unk_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast


def build_random_policy(out_dir: str, seed: int = 0, spec: TinyModelConfig | None = None) -> str:
    """Write a randomly initialised tiny Qwen2 policy + tokenizer to ``out_dir`` (float32).

    ``spec`` defaults to :func:`tiny_spec` (configs/model/tiny.yaml). Returns ``out_dir``. Deterministic
    for a given ``seed`` and ``spec``.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    spec = spec or tiny_spec()
    os.makedirs(out_dir, exist_ok=True)
    tokenizer = build_tokenizer(out_dir, spec.vocab_size)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    im_end_id = tokenizer.convert_tokens_to_ids(IM_END)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=False,
        bos_token_id=eos_id,
        eos_token_id=[eos_id, im_end_id],
        pad_token_id=eos_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=eos_id, eos_token_id=[eos_id, im_end_id], pad_token_id=eos_id
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    with open(os.path.join(out_dir, "tiny_model_spec.json"), "w") as f:
        json.dump(asdict(spec) | {"seed": seed}, f)
    return out_dir
