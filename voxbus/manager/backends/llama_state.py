"""Saving and restoring one conversation's llama.cpp KV cache.

llama-cpp-python's own `save_state` also copies the logits buffer (n_batch x n_vocab floats:
half a gigabyte for Gemma's 262k vocabulary), so this copies only sequence 0's KV cells with
`llama_state_seq_get_data` plus the token ids they hold. A restored context has no logits; the
next turn always evaluates at least its new tokens, which produces them.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

import llama_cpp
import numpy as np
from llama_cpp import Llama

MAGIC = b"VXKV1\n"
_HEAD = struct.Struct("<II")  # token count, KV byte count


@dataclass
class KvSnapshot:
    tokens: np.ndarray  # int32 token ids in the KV cache, in position order
    kv: bytes

    @property
    def nbytes(self) -> int:
        return len(self.kv) + self.tokens.nbytes

    def to_bytes(self) -> bytes:
        return MAGIC + _HEAD.pack(len(self.tokens), len(self.kv)) + self.tokens.astype("<i4").tobytes() + self.kv

    @classmethod
    def from_bytes(cls, data: bytes) -> "KvSnapshot":
        if not data.startswith(MAGIC):
            raise ValueError("not a voxbus KV snapshot")
        n, size = _HEAD.unpack_from(data, len(MAGIC))
        start = len(MAGIC) + _HEAD.size
        tokens = np.frombuffer(data, dtype="<i4", count=n, offset=start).astype(np.intc)
        kv = data[start + 4 * n:]
        if len(kv) != size:
            raise ValueError(f"truncated KV snapshot ({len(kv)} of {size} bytes)")
        return cls(tokens, kv)


def snapshot(llm: Llama) -> KvSnapshot:
    ctx = llm._ctx.ctx
    size = llama_cpp.llama_state_seq_get_size(ctx, 0)
    buf = (ctypes.c_uint8 * size)()
    written = llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)
    return KvSnapshot(llm.input_ids[: llm.n_tokens].copy(), ctypes.string_at(buf, written))


def restore(llm: Llama, snap: KvSnapshot) -> bool:
    """Make the context hold exactly `snap`; on failure leave it empty (the turn recomputes)."""
    ctx = llm._ctx.ctx
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    llm.n_tokens = 0
    buf = (ctypes.c_uint8 * len(snap.kv)).from_buffer_copy(snap.kv)
    if llama_cpp.llama_state_seq_set_data(ctx, buf, len(snap.kv), 0) == 0:
        return False
    n = len(snap.tokens)
    llm.input_ids[:n] = snap.tokens
    llm.n_tokens = n
    llm._requires_eval = True  # no logits were restored: never sample before evaluating a token
    return True
