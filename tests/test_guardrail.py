"""Architecture guardrails: model libraries stay behind manager/backends/, subjects in subjects.py, modules small."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "voxbus"
MODEL_LIBRARIES = {"llama_cpp", "faster_whisper", "piper", "TTS", "ctranslate2", "torch", "torchaudio", "onnxruntime"}
BACKENDS = PACKAGE / "manager" / "backends"
# The one deliberate exception: the STT service runs the 2 MB Silero VAD itself, per session,
# every 32 ms (see voxbus/stt/vad.py for why); it may import onnxruntime and nothing else.
ALLOWED = {PACKAGE / "stt" / "vad.py": {"onnxruntime"}}


def python_files():
    return sorted(PACKAGE.rglob("*.py"))


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                roots.add(node.args[0].value.split(".")[0])
    return roots


def test_only_backends_import_model_libraries():
    offenders = {}
    for path in python_files():
        if BACKENDS in path.parents:
            continue
        bad = imported_roots(path) & MODEL_LIBRARIES - ALLOWED.get(path, set())
        if bad:
            offenders[str(path.relative_to(PACKAGE))] = sorted(bad)
    assert not offenders, f"model libraries imported outside manager/backends/: {offenders}"


def test_the_guardrail_sees_imports():
    # The check above must be able to fail: the backends do import these libraries.
    seen = set().union(*(imported_roots(p) for p in BACKENDS.glob("*.py")))
    assert {"llama_cpp", "faster_whisper", "piper"} <= seen


# A literal starting with the default prefix or $SRV, or an f-string gluing a prefix to a token.
SUBJECT_LITERAL = re.compile(r"""["'](vox|\$SRV)\.[A-Za-z*>{]""")


def test_subjects_are_built_only_in_subjects_py():
    offenders = []
    for path in python_files():
        if path.name == "subjects.py" or path.parent.name == "protocol_doc":
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"""f?["'][^"']*\{[^}]*prefix[^}]*\}\.""", code) or SUBJECT_LITERAL.search(code):
                offenders.append(f"{path.relative_to(PACKAGE)}:{lineno}: {line.strip()}")
    assert not offenders, "subject strings built outside subjects.py:\n" + "\n".join(offenders)


MAX_MODULE_LINES = 300


def test_modules_stay_small():
    """One concern per module: a file past this has grown a second job and should be split."""
    big = [f"{p.relative_to(PACKAGE)}: {n} lines" for p in python_files()
           if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not big, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(big)
