"""One vLLM engine per checkpoint, turning validated OpenAI requests into OpenAI responses."""
from __future__ import annotations

import os
import time
import uuid
from typing import Any

from serve.config import EngineConfig
from serve.protocol import ChatCompletionRequest, CompletionRequest, RequestError


def _content_text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


class ModelEngine:
    """A vLLM ``AsyncLLM`` plus the tokenizer (chat template, prompt-length checks)."""

    def __init__(self, model_id: str, path: str, cfg: EngineConfig, limits: dict):
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.kv_cache_space_gb))
        from transformers import AutoConfig, AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.model_id, self.path, self.limits = model_id, path, limits
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        hf_cfg = AutoConfig.from_pretrained(path)
        self.max_model_len = cfg.max_model_len or int(getattr(hf_cfg, "max_position_embeddings", 2048))
        args = AsyncEngineArgs(
            model=path, tokenizer=path, served_model_name=model_id, dtype=cfg.dtype,
            max_model_len=self.max_model_len, enforce_eager=cfg.enforce_eager, seed=cfg.seed,
            gpu_memory_utilization=cfg.gpu_memory_utilization, max_num_seqs=cfg.max_num_seqs,
            max_logprobs=limits["max_logprobs"],
        )
        self.engine = AsyncLLM.from_engine_args(args)
        self.created = int(time.time())

    def __del__(self):
        """Shut the engine down when Serve's multiplexer evicts this model."""
        engine = getattr(self, "engine", None)
        if engine is not None:
            try:
                engine.shutdown()
            except Exception:  # noqa: BLE001
                pass

    # ---- request preparation -------------------------------------------------------------
    def _prompts(self, req) -> tuple[list[list[int]], str]:
        """Token ids of each prompt and the name of the field they came from."""
        if isinstance(req, ChatCompletionRequest):
            messages = [{"role": m.role, "content": _content_text(m.content)} for m in req.messages]
            try:
                ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            except Exception as exc:  # noqa: BLE001 - template errors are client errors
                raise RequestError(400, f"cannot apply the chat template: {exc}", "messages") from None
            if hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return [list(ids)], "messages"
        prompt = req.prompt
        if isinstance(prompt, str):
            return [self.tokenizer.encode(prompt)], "prompt"
        if all(isinstance(p, int) for p in prompt):
            return [list(prompt)], "prompt"
        return [p if isinstance(p, list) else self.tokenizer.encode(p) for p in prompt], "prompt"

    def _max_tokens(self, req, prompt_len: int, field: str) -> int:
        limit = self.limits["max_tokens_limit"]
        asked = getattr(req, "max_completion_tokens", None) or req.max_tokens
        if asked == 0:
            if not getattr(req, "echo", False):
                raise RequestError(400, "'max_tokens' may be 0 only with 'echo': true", "max_tokens")
            asked = 1  # score the prompt; the one sampled token is dropped from the response
        if asked is not None and asked > limit:
            raise RequestError(400, f"'max_tokens' is {asked}, above this server's limit of {limit}",
                               "max_tokens", "max_tokens_exceeded")
        room = self.max_model_len - prompt_len
        if room <= 0:
            raise RequestError(400, f"the {field} is {prompt_len} tokens, longer than the model's context "
                               f"of {self.max_model_len} tokens", field, "context_length_exceeded")
        if asked is not None and asked > room:
            raise RequestError(400, f"{field} ({prompt_len} tokens) + max_tokens ({asked}) exceeds the "
                               f"context of {self.max_model_len} tokens", "max_tokens", "context_length_exceeded")
        return min(asked or room, limit, room)

    def _sampling(self, req, max_tokens: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        if req.n > self.limits["max_n"]:
            raise RequestError(400, f"'n' is {req.n}, above the limit of {self.limits['max_n']}", "n")
        if isinstance(req, ChatCompletionRequest):
            nlog = (req.top_logprobs or 0) if req.logprobs else None
        else:
            nlog = req.logprobs
        if nlog is not None and nlog > self.limits["max_logprobs"]:
            field = "top_logprobs" if isinstance(req, ChatCompletionRequest) else "logprobs"
            raise RequestError(400, f"'{field}' is {nlog}, above the limit of {self.limits['max_logprobs']}", field)
        stop = [req.stop] if isinstance(req.stop, str) else req.stop
        prompt_lp = nlog if isinstance(req, CompletionRequest) and req.echo and nlog is not None else None
        return SamplingParams(n=req.n, prompt_logprobs=prompt_lp, temperature=req.temperature, top_p=req.top_p, max_tokens=max_tokens,
                              seed=req.seed, stop=stop, logprobs=nlog,
                              ignore_eos=req.ignore_eos,
                              output_kind=RequestOutputKind.FINAL_ONLY)

    # ---- generation ----------------------------------------------------------------------
    async def _generate(self, ids: list[int], params) -> Any:
        from vllm.inputs import TokensPrompt

        final, by_index = None, {}
        async for out in self.engine.generate(TokensPrompt(prompt_token_ids=ids), params,
                                              request_id=uuid.uuid4().hex):
            final = out
            for comp in out.outputs:  # with n > 1, samples may finish in different outputs
                by_index[comp.index] = comp
        final.outputs = [by_index[i] for i in sorted(by_index)]
        return final

    async def handle(self, req: CompletionRequest | ChatCompletionRequest) -> dict:
        """Run the request and return the OpenAI response body (raises ``RequestError``)."""
        import asyncio

        prompts, field = self._prompts(req)
        plans = [(ids, self._sampling(req, self._max_tokens(req, len(ids), field))) for ids in prompts]
        outs = await asyncio.gather(*(self._generate(ids, p) for ids, p in plans))
        if isinstance(req, ChatCompletionRequest):
            return self._chat_body(req, outs[0])
        return self._completion_body(req, outs)

    def _usage(self, outs) -> dict:
        p = sum(len(o.prompt_token_ids) for o in outs)
        c = sum(len(c.token_ids) for o in outs for c in o.outputs)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def _token_str(self, tid: int) -> str:
        return self.tokenizer.decode([tid])

    def _completion_logprobs(self, steps) -> dict:
        """OpenAI legacy logprobs from ``(token_id, {id: Logprob} | None)`` steps."""
        tokens, lps, tops, offsets, pos = [], [], [], [], 0
        for tid, step in steps:
            tok = self._token_str(tid)
            tokens.append(tok)
            lps.append(step[tid].logprob if step and tid in step else None)
            tops.append({self._token_str(t): lp.logprob for t, lp in step.items()} if step else None)
            offsets.append(pos)
            pos += len(tok)
        return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}

    def _completion_choice(self, req: CompletionRequest, out, comp, index: int) -> dict:
        score_only = req.max_tokens == 0
        token_ids = [] if score_only else list(comp.token_ids)
        text = "" if score_only else comp.text
        steps = [] if score_only or comp.logprobs is None else list(zip(token_ids, comp.logprobs))
        if req.echo:
            text = self.tokenizer.decode(out.prompt_token_ids) + text
            if req.logprobs is not None:
                steps = list(zip(out.prompt_token_ids, out.prompt_logprobs or [])) + steps
        logprobs = self._completion_logprobs(steps) if req.logprobs is not None else None
        return {"index": index, "text": text, "logprobs": logprobs,
                "finish_reason": "length" if score_only else (comp.finish_reason or "stop")}

    def _completion_body(self, req: CompletionRequest, outs) -> dict:
        choices = []
        for out in outs:
            for comp in sorted(out.outputs, key=lambda c: c.index):
                choices.append(self._completion_choice(req, out, comp, len(choices)))
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": self.model_id, "choices": choices, "usage": self._usage(outs)}

    def _chat_logprobs(self, comp, top: int) -> dict | None:
        if comp.logprobs is None:
            return None
        content = []
        for tid, step in zip(comp.token_ids, comp.logprobs):
            tok = self._token_str(tid)
            entry = {"token": tok, "logprob": step[tid].logprob if tid in step else None,
                     "bytes": list(tok.encode()), "top_logprobs": []}
            for t, lp in sorted(step.items(), key=lambda kv: kv[1].rank or 0)[:top]:
                s = self._token_str(t)
                entry["top_logprobs"].append({"token": s, "logprob": lp.logprob, "bytes": list(s.encode())})
            content.append(entry)
        return {"content": content}

    def _chat_body(self, req: ChatCompletionRequest, out) -> dict:
        choices = [{"index": i, "message": {"role": "assistant", "content": comp.text},
                    "logprobs": self._chat_logprobs(comp, req.top_logprobs or 0) if req.logprobs else None,
                    "finish_reason": comp.finish_reason or "stop"}
                   for i, comp in enumerate(sorted(out.outputs, key=lambda c: c.index))]
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": self.model_id, "choices": choices, "usage": self._usage([out])}
