"""Chat prompts for GGUF files that carry no chat template.

A GGUF with `tokenizer.chat_template` is formatted by llama-cpp-python from that template. Some
files (the bundled Gemma 3 270M among them) have none, and llama-cpp-python then silently falls
back to the Llama-2 format, which a Gemma model answers with `<<SYS>>` noise; its own "gemma"
format drops the system message. So for known architectures voxbus renders the model family's
official template here (Gemma 3's folds the system message into the first user turn).
"""

from __future__ import annotations

from typing import Callable

Formatter = Callable[[list[dict[str, str]]], str]


def gemma(messages: list[dict[str, str]]) -> str:
    """Gemma's template; BOS is added by the tokenizer, not written here."""
    prefix = ""
    if messages and messages[0]["role"] == "system":
        prefix, messages = messages[0]["content"].strip() + "\n\n", messages[1:]
    parts = []
    for i, m in enumerate(messages):
        role = "model" if m["role"] == "assistant" else m["role"]
        parts.append(f"<start_of_turn>{role}\n{prefix if i == 0 else ''}{m['content'].strip()}<end_of_turn>\n")
    if prefix and not messages:
        parts.append(f"<start_of_turn>user\n{prefix.strip()}<end_of_turn>\n")
    return "".join(parts) + "<start_of_turn>model\n"


FALLBACKS: dict[str, tuple[Formatter, list[str]]] = {
    "gemma": (gemma, ["<end_of_turn>"]),
    "gemma2": (gemma, ["<end_of_turn>"]),
    "gemma3": (gemma, ["<end_of_turn>"]),
}
"""architecture -> (formatter, stop strings)."""
