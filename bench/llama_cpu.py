"""The bundled Gemma's prompt and decode speed with llama.cpp's extra weight buffer types on and
off, on this CPU.

voxbus turns the extra buffer types off only on CPUs with AMX, where llama.cpp's AMX kernels
crash (voxbus/manager/backends/cpu_features.py). This measures what each setting costs where it
can run: each setting loads the model in a fresh process (as a model worker would), evaluates a
prompt of about 500 tokens and decodes 64 tokens greedily, `--rounds` times, alternating the two
settings. Settings that crash are reported as crashed, not measured. Prints the median speeds and
the ratio off/on, and the headline as JSON on the last line.

    .venv/bin/python bench/llama_cpu.py [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from voxbus.manager.backends.cpu_features import cpu_flags, has_amx

PROBE = r'''
import json, sys, time
from pathlib import Path
from voxbus.config import load_config
from voxbus.manager import sources
from voxbus.manager.backends.base import LoadSpec
from voxbus.manager.backends.llama import LlamaBackend

extra, threads, cache = sys.argv[1] == "on", int(sys.argv[2]), Path(sys.argv[3])
src = sources.resolve(load_config(env={}).models["gemma3-270m"].source, cache)
backend = LlamaBackend()
backend.load(LoadSpec(model_id="gemma3-270m", path=src.path, threads=threads,
                      options={"n_ctx": 2048, "use_extra_bufts": extra}))
llm = backend.llm
words = ("the harbour town has a small market where fishermen sell their catch every morning and "
         "visitors walk along the old stone pier ").split()
prompt = " ".join(words[i % len(words)] for i in range(400))
tokens = llm.tokenize(prompt.encode(), add_bos=True)
out = []
for _ in range(2):
    llm.reset()
    t = time.perf_counter()
    llm.eval(tokens)
    prompt_s = time.perf_counter() - t
    t = time.perf_counter()
    n = 0
    for tok in llm.generate([], temp=0.0, reset=False):
        n += 1
        if n == 64:
            break
    decode_s = time.perf_counter() - t
    out.append({"prompt_tps": len(tokens) / prompt_s, "decode_tps": n / decode_s, "prompt_tokens": len(tokens)})
print(json.dumps(out[-1]))
'''


def run(setting: str, threads: int, cache: str) -> dict | str:
    proc = subprocess.run([sys.executable, "-c", PROBE, setting, str(threads), cache], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"crashed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    flags = cpu_flags()
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"CPU: {model}, {os.cpu_count()} cores, AMX: {has_amx(flags)}; threads {args.threads}")
    cache = tempfile.mkdtemp(prefix="voxbus-bench-cpu-")
    results: dict[str, list] = {"on": [], "off": []}
    for i in range(args.rounds):
        for setting in (("on", "off") if i % 2 == 0 else ("off", "on")):
            r = run(setting, args.threads, cache)
            results[setting].append(r)
            print(f"round {i + 1} extra buffers {setting}: {r}")
    summary = {}
    for setting, runs in results.items():
        ok = [r for r in runs if isinstance(r, dict)]
        summary[setting] = ({"prompt_tps": round(statistics.median(r["prompt_tps"] for r in ok), 1),
                             "decode_tps": round(statistics.median(r["decode_tps"] for r in ok), 1)}
                            if ok else {"crashed": runs[0]})
    print(f"extra buffer types on : {summary['on']}")
    print(f"extra buffer types off: {summary['off']}")
    both = all("prompt_tps" in summary[s] for s in summary)
    ratio = round(summary["off"]["prompt_tps"] / summary["on"]["prompt_tps"], 3) if both else None
    decode_ratio = round(summary["off"]["decode_tps"] / summary["on"]["decode_tps"], 3) if both else None
    print(json.dumps({"metric": "llama_prompt_tps_extra_bufts_off_vs_on", "value": ratio, "unit": "x",
                      "decode_ratio": decode_ratio, "cpu": model, "amx": has_amx(flags), "threads": args.threads,
                      "on": summary["on"], "off": summary["off"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
