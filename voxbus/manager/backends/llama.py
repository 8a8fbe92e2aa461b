"""llama.cpp (GGUF) text generation through llama-cpp-python, with on-demand requantization.

A `Llama` object is not thread-safe: each loaded model runs in a worker process that uses it from one thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Callable

import llama_cpp
from llama_cpp import Llama

from voxbus.manager.backends import llama_state
from voxbus.manager.backends.base import (
    BackendError, ContextTooLong, GenerateResult, LlmBackend, LoadSpec, UnsupportedQuantization,
)
from voxbus.manager.backends.chat_template import FALLBACKS
from voxbus.manager.backends.cpu_features import cpu_flags, has_amx, llama_extra_buffers

log = logging.getLogger(__name__)

# GGUF file types by the names users write in config (llama.cpp's own quantize names).
FILE_TYPES: dict[str, int] = {
    "f32": llama_cpp.LLAMA_FTYPE_ALL_F32,
    "f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
    "bf16": llama_cpp.LLAMA_FTYPE_MOSTLY_BF16,
    "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "q5_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
}
_NAME_BY_TYPE = {v: k for k, v in FILE_TYPES.items()}


def gguf_file_type(path: Path) -> str | None:
    """The quantization a GGUF file holds, read from its metadata without loading weights."""
    probe = Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        raw = probe.metadata.get("general.file_type")
    finally:
        probe.close()
    return _NAME_BY_TYPE.get(int(raw), f"type{raw}") if raw is not None else None


def _context_checked(stream, n_ctx: int):
    """llama-cpp-python raises a plain ValueError for a chat prompt longer than the context (it
    renders the template itself, so it cannot be checked before): make it a ContextTooLong."""
    try:
        yield from stream
    except ValueError as exc:
        if "exceed context window" in str(exc):
            raise ContextTooLong(f"{exc}: shorten the messages, or drop old turns (options.n_ctx is {n_ctx})") from None
        raise


def quantized_path(spec: LoadSpec, target: str) -> Path:
    """Quantize once into the cache, keyed by the source's fingerprint and the target type."""
    if spec.cache_dir is None or not spec.fingerprint:
        raise BackendError("requantizing needs a cache directory and a source fingerprint")
    out = spec.cache_dir / "quantized" / f"{spec.path.stem}-{spec.fingerprint[:16]}-{target}.gguf"
    if out.is_file():
        log.info("%s: reusing quantized %s", spec.model_id, out)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FILE_TYPES[target]
    params.nthread = spec.threads or os.cpu_count() or 1
    params.allow_requantize = True  # the bundled file is already quantized
    log.info("%s: quantizing %s to %s (once; cached at %s)", spec.model_id, spec.path.name, target, out)
    rc = llama_cpp.llama_model_quantize(str(spec.path).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise BackendError(f"llama.cpp could not quantize {spec.path.name} to {target} (code {rc})")
    tmp.replace(out)  # atomic: a crash mid-quantize never leaves a truncated cache entry
    return out


@contextlib.contextmanager
def model_params(**fields):
    """Set llama_model_params fields that `Llama()` has no argument for (use_extra_bufts).

    Llama() builds its params from llama_model_default_params() and loads the model inside its
    constructor, so the defaults are adjusted for that one call; a worker loads one model at a
    time on one thread, so nothing else sees the change."""
    low = llama_cpp.llama_cpp
    real = low.llama_model_default_params

    def adjusted():
        params = real()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    low.llama_model_default_params = adjusted
    try:
        yield
    finally:
        low.llama_model_default_params = real


class LlamaBackend(LlmBackend):
    name = "llama_cpp"
    quantizations = tuple(FILE_TYPES)

    def __init__(self) -> None:
        self.llm: Llama | None = None
        self.path: Path | None = None
        self.file_type: str | None = None
        self.owner: str | None = None  # the conversation whose tokens the context holds now
        self.chat_fallback = None  # (formatter, stops) when the GGUF has no chat template

    def snapshot_loader(self):
        return llama_state.KvSnapshot.from_bytes

    def load(self, spec: LoadSpec) -> None:
        if not spec.path.is_file():
            raise BackendError(f"GGUF file not found: {spec.path}")
        path = spec.path
        source_type = gguf_file_type(path)
        target = spec.quantization
        if target and target not in FILE_TYPES:
            raise UnsupportedQuantization(f"llama.cpp has no quantization {target!r}; choose from {', '.join(FILE_TYPES)}")
        if target and target != source_type:
            path = quantized_path(spec, target)
        opts = dict(spec.options)
        flags = cpu_flags()
        extra = llama_extra_buffers(flags, opts.pop("use_extra_bufts", None))
        if not extra and has_amx(flags):
            log.info("%s: AMX CPU: llama.cpp's extra buffer types are off (its AMX kernels crash; "
                     "docs/BENCHMARKS.md)", spec.model_id)
        with model_params(use_extra_bufts=extra):
            self.llm = Llama(
                model_path=str(path),
                n_ctx=int(opts.pop("n_ctx", 4096)),
                n_gpu_layers=spec.n_gpu_layers if spec.device == "cuda" else 0,
                n_threads=spec.threads or os.cpu_count(),
                verbose=False,
                **opts,
            )
        self.path = path
        self.file_type = target or source_type
        meta = self.llm.metadata
        if "tokenizer.chat_template" not in meta and "chat_format" not in spec.options:
            self.chat_fallback = FALLBACKS.get(meta.get("general.architecture", ""))

    def generate(
        self,
        prompt: str | None,
        messages: list[dict[str, str]] | None,
        options: dict[str, Any],
        on_text: Callable[[str], None],
        cancelled: Callable[[], bool],
        conversation: str | None = None,
    ) -> GenerateResult:
        llm = self.llm
        assert llm is not None, "generate before load"
        sampling = dict(
            max_tokens=options.get("max_tokens", 256), temperature=options.get("temperature", 0.8),
            top_p=options.get("top_p", 0.95), top_k=options.get("top_k", 40),
            repeat_penalty=options.get("repeat_penalty", 1.1), stop=options.get("stop") or None,
            seed=options.get("seed"), stream=True,
        )
        store = self.conversations
        if conversation and store is not None and self.owner != conversation:
            snap = store.get(conversation)
            # Without a snapshot the context keeps whatever it holds: llama.cpp still reuses the
            # longest common token prefix (a shared system prompt), which is always correct.
            if snap is not None and not llama_state.restore(llm, snap):
                log.warning("restoring conversation %s failed; recomputing it", conversation)
        before = llm.input_ids[: llm.n_tokens].copy()
        chat = messages is not None and self.chat_fallback is None
        if chat:
            stream = llm.create_chat_completion(messages=messages, **sampling)
        else:
            if messages is not None:  # the family's template, rendered here (see chat_template.py)
                render, stops = self.chat_fallback
                prompt = render(messages)
                sampling["stop"] = (sampling["stop"] or []) + stops
            self._check_fits(prompt)
            stream = llm.create_completion(prompt, **sampling)
        pieces: list[str] = []
        finish = "stop"
        try:
            for chunk in _context_checked(stream, llm.n_ctx()):
                if cancelled():
                    finish = "cancelled"
                    break
                choice = chunk["choices"][0]
                text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                if text:
                    pieces.append(text)
                    on_text(text)
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
        finally:
            stream.close()
        completion = len(pieces)
        prompt_tokens = max(llm.n_tokens - completion, 0)
        cached = int(Llama.longest_token_prefix(before.tolist(), llm.input_ids[:prompt_tokens].tolist()))
        if cached >= prompt_tokens:
            cached = max(prompt_tokens - 1, 0)  # llama.cpp re-evaluates one token to get fresh logits
        if conversation and store is not None:
            store.put(conversation, llama_state.snapshot(llm))
        self.owner = conversation
        return GenerateResult(
            text="".join(pieces), prompt_tokens=prompt_tokens,
            completion_tokens=completion, cached_tokens=cached, finish_reason=finish,
        )

    def _check_fits(self, prompt: str) -> None:
        """A prompt must leave room for at least one generated token in the context."""
        n = len(self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))
        if n >= self.llm.n_ctx():
            raise ContextTooLong(f"the prompt is {n} tokens; this model's context holds {self.llm.n_ctx()} "
                                 f"(options.n_ctx): shorten it, or drop old turns of the conversation")

    @classmethod
    def supports_cuda(cls) -> bool:
        return bool(llama_cpp.llama_supports_gpu_offload())

    def unload(self) -> None:
        if self.conversations is not None:
            self.conversations.spill_all()
        if self.llm is not None:
            self.llm.close()
        self.llm = None

    def footprint_hint(self) -> int:
        return self.path.stat().st_size if self.path else 0
