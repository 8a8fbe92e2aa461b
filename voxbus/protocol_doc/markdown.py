"""What every section of the protocol document is built from: the wire Structs found in the
message modules, their field docs, and Markdown tables and links."""

from __future__ import annotations

import ast
import inspect
import re
import typing

import msgspec
import msgspec.inspect as mi

from voxbus import subjects as sj
from voxbus.config.schema import Config
from voxbus.messages import admin, audio, codec, control, model as mm, status, text
from voxbus.messages.headers import STATUS as STATUS_HEADER

MODULES = (audio, text, control, admin, mm, status)
SID = "demo"
S = sj.Subjects("vox")
CFG = Config()
META, STATUS = codec.META_HEADER, STATUS_HEADER
UNIONS = {n: typing.get_args(getattr(m, n)) for m in MODULES for n in dir(m)
          if n.endswith("Event") and typing.get_origin(getattr(m, n)) is typing.Union}


def scan() -> tuple[list[type], dict[tuple[type, str], str]]:
    """The public wire Structs in source order, and the attribute docstrings of every Struct (a string
    statement right after an annotated assignment in a class body documents that field)."""
    found, docs = [], {}
    for mod in MODULES:
        for node in ast.walk(ast.parse(inspect.getsource(mod))):
            cls = getattr(mod, getattr(node, "name", ""), None)
            if not (isinstance(node, ast.ClassDef) and isinstance(cls, type) and issubclass(cls, msgspec.Struct)):
                continue
            found += [] if node.name.startswith("_") else [cls]
            for a, b in zip(node.body, node.body[1:]):
                if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr) \
                        and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
                    docs[cls, a.target.id] = inspect.cleandoc(b.value.value)
    return found, docs


def js(obj) -> str:
    return msgspec.json.encode(obj).decode()


def link(name: str) -> str:
    return f"[{name}](#{name.lower()})"


def links(phrase: str) -> str:
    names = {c.__name__ for c in scan()[0]}
    return re.sub(r"\b[A-Z]\w+\b", lambda m: link(m[0]) if m[0] in names else m[0], phrase)


def table(head: tuple[str, ...], rows) -> str:
    cell = lambda s: " ".join(str(s).split()).replace("|", "\\|")  # noqa: E731
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows])


def type_name(t) -> str:
    """A msgspec type as a JSON reader sees it: `int >= 0`, `string | null`, `array of Segment`."""
    if isinstance(t, mi.Metadata):
        return type_name(t.type)
    if isinstance(t, (mi.IntType, mi.FloatType, mi.StrType)):
        ops = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >="),
               ("max_length", "length <="))
        bounds = ", ".join(f"{op} {getattr(t, a)}" for a, op in ops if getattr(t, a, None) is not None)
        return f"{ {mi.IntType: 'int', mi.FloatType: 'number', mi.StrType: 'string'}[type(t)]} {bounds}".strip()
    if isinstance(t, mi.UnionType):
        return " | ".join(type_name(x) for x in t.types)
    if isinstance(t, mi.LiteralType):
        return " | ".join(js(v) for v in t.values)
    if isinstance(t, mi.StructType):
        return link(t.cls.__name__)
    if isinstance(t, (mi.ListType, mi.VarTupleType)):
        return f"array of {type_name(t.item_type)}"
    if isinstance(t, mi.DictType):
        return f"object of {type_name(t.key_type)} to {type_name(t.value_type)}"
    return {mi.NoneType: "null", mi.BoolType: "boolean", mi.AnyType: "any"}.get(type(t), type(t).__name__)


def default_of(f: mi.Field) -> str:
    if f.required:
        return "required"
    if f.default_factory is not msgspec.NODEFAULT:
        value = f.default_factory()
        return f"{type(value).__name__} defaults" if isinstance(value, msgspec.Struct) else f"`{js(value)}`"
    return f"`{js(f.default)}`"


def struct_section(cls: type, docs: dict) -> str:
    info = mi.type_info(cls)
    owner = {n: b for b in reversed(cls.__mro__) for n in b.__dict__.get("__annotations__", {})}
    order = list(owner)  # base classes' fields first, each in source order
    out = [f"### {cls.__name__}", ""] + ([inspect.cleandoc(cls.__doc__), ""] if cls.__doc__ else [])
    if info.tag_field:
        union = next(n for n, members in UNIONS.items() if cls in members)
        out += [f"Tagged: `\"{info.tag_field}\": {js(info.tag)}`, a member of `{union}`.", ""]
    rows = []
    for f in sorted(info.fields, key=lambda f: order.index(f.name)):
        meta = f.type.extra_json_schema.get("description", "") if isinstance(f.type, mi.Metadata) else ""
        doc = " ".join(d for d in (meta, docs.get((owner[f.name], f.name), "")) if d)
        rows.append((f"`{f.encode_name}`", type_name(f.type), default_of(f), doc))
    return "\n".join(out + [table(("Field", "JSON type", "Default", "Description"), rows)])


