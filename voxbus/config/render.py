"""`voxbus/config/default.yaml`, generated from the schema: its defaults and its field docs.

The schema (schema.py, bundled.py) is the one source of the defaults; the YAML file is what a
person reads (and copies from) to write a voxbus.yaml. A test fails when the committed file is
stale:

    python -m voxbus.config.render voxbus/config/default.yaml     # rewrite it
    python -m voxbus.config.render --check voxbus/config/default.yaml
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
from pathlib import Path
from typing import Any

import msgspec
import yaml

from voxbus.config import nats_section, schema, stream_limits
from voxbus.config.units import enc_hook

HEADER = """\
# voxbus default configuration, generated from voxbus/config/schema.py (do not edit: run
# `python -m voxbus.config.render voxbus/config/default.yaml`). A user file (--config,
# $VOXBUS_CONFIG, ./voxbus.yaml or <user config dir>/voxbus/voxbus.yaml) is merged over these
# defaults key by key, then VOXBUS_* environment overrides:
#   VOXBUS_NATS_URL=nats://host:4222          -> nats.url
#   VOXBUS__MANAGER__IDLE_TTL=5m              -> manager.idle_ttl (any key, '__' between levels)
"""
WIDTH = 100


def field_docs() -> dict[tuple[str, str], str]:
    """(class name, field) -> the docstring written under the field in schema.py or stream_limits.py."""
    classes = [n for module in (schema, nats_section, stream_limits)
               for n in ast.parse(inspect.getsource(module)).body if isinstance(n, ast.ClassDef)]
    docs: dict[tuple[str, str], str] = {}
    for cls in classes:
        body = cls.body
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[cls.name, node.target.id] = " ".join(inspect.cleandoc(nxt.value.value).split())
    return docs


def _scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def _comment(text: str, indent: str) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(indent) + 2 + len(line) + len(word) + 1 > WIDTH and line:
            lines.append(line)
            line = ""
        line = f"{line} {word}".strip()
    if line:
        lines.append(line)
    return [f"{indent}# {part}" for part in lines]


def _emit(value: Any, docs: dict, depth: int) -> list[str]:
    """A Struct's fields, each under its doc comment."""
    indent = "  " * depth
    out: list[str] = []
    for f in msgspec.structs.fields(value):
        item = getattr(value, f.name)
        doc = docs.get((type(value).__name__, f.name))
        if doc:
            out += _comment(doc, indent)
        out += _entry(f.name, item, docs, depth)
    return out


def _compact(value: msgspec.Struct) -> dict[str, Any]:
    """Only the fields that differ from their defaults: how a registry entry is written."""
    out = {}
    for f in msgspec.structs.fields(value):
        item = getattr(value, f.name)
        default = f.default if f.default is not msgspec.NODEFAULT else (
            f.default_factory() if f.default_factory is not msgspec.NODEFAULT else msgspec.NODEFAULT)
        if item != default:
            out[f.name] = _compact(item) if isinstance(item, msgspec.Struct) else msgspec.to_builtins(item, enc_hook=enc_hook)
    return out


def _entry(name: str, item: Any, docs: dict, depth: int) -> list[str]:
    indent = "  " * depth
    if isinstance(item, msgspec.Struct):
        return [f"{indent}{name}:"] + _emit(item, docs, depth + 1)
    if isinstance(item, dict) and item and all(isinstance(v, msgspec.Struct) for v in item.values()):
        out = [f"{indent}{name}:"]
        for key, spec in item.items():  # the model registry: one entry per model, its own settings only
            out.append(f"{indent}  {key}:")
            out += [f"{indent}    {k}: {_scalar(v)}" for k, v in _compact(spec).items()]
        return out
    return [f"{indent}{name}: {_scalar(msgspec.to_builtins(item, enc_hook=enc_hook))}"]


def _registry_doc(docs: dict) -> list[str]:
    """What a model entry may say (its fields are documented once, here)."""
    fields = [f for f in msgspec.structs.fields(schema.ModelSpec)]
    lines = ["# Each model: kind (llm, stt, tts), backend, source ({package: ...} or {path: ..., config: ...}),",
             "# and any of:"]
    for f in fields:
        doc = docs.get(("ModelSpec", f.name))
        if doc and f.name not in ("kind", "backend", "source"):
            lines += _comment(f"{f.name}: {doc}", "")
    return lines


def render() -> str:
    lines = HEADER.splitlines()
    docs = field_docs()
    config = schema.Config()
    for f in msgspec.structs.fields(config):
        lines.append("")
        if f.name == "models":
            lines += _registry_doc(docs)
        lines += _entry(f.name, getattr(config, f.name), docs, 0)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write (or check) voxbus/config/default.yaml from the schema.")
    ap.add_argument("path", type=Path)
    ap.add_argument("--check", action="store_true", help="exit 1 when the file differs from the schema")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if not args.path.is_file() or args.path.read_text() != text:
            sys.stderr.write(f"{args.path} is stale: run python -m voxbus.config.render {args.path}\n")
            return 1
        return 0
    args.path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
