"""`voxbus ask TEXT [--conversation ID]`: talk to the LLM through the ModelManager."""

from __future__ import annotations

import argparse
import json
import sys

from voxbus.cli.args import session_id


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ask", parents=[common], help="ask the LLM (streams the reply)",
                       description="Stream the LLM's reply to TEXT. With --conversation the history is kept "
                                   "(under the user data dir) and the manager reuses the conversation's KV cache.")
    p.add_argument("text", metavar="TEXT")
    p.add_argument("--conversation", metavar="ID", type=session_id, help="continue (or start) this conversation")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--model", metavar="ID", help="LLM model id (default: manager.defaults.llm)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import platformdirs

    from voxbus.cli import load_for, run_async
    from voxbus.client import ModelClient
    from voxbus.messages import GenerateChunk, GenerateDone
    from voxbus.pipeline import local_pipeline

    config = load_for(args)
    history_file = None
    messages = [{"role": "system", "content": config.assistant.system_prompt}]
    if args.conversation:
        history_file = Path(platformdirs.user_data_dir("voxbus")) / "conversations" / f"{args.conversation}.json"
        if history_file.is_file():
            messages = json.loads(history_file.read_text())
    messages.append({"role": "user", "content": args.text})

    async def ask() -> int:
        async with local_pipeline(config, "voxbus-ask", stt=False) as pipe:
            client = ModelClient.from_bus(pipe.bus)
            async for event in client.generate(messages=messages, conversation=args.conversation, model=args.model,
                                               max_tokens=args.max_tokens, temperature=args.temperature):
                if isinstance(event, GenerateChunk):
                    sys.stdout.write(event.text)
                    sys.stdout.flush()
                elif isinstance(event, GenerateDone):
                    sys.stdout.write("\n")
                    messages.append({"role": "assistant", "content": event.text})
                    print(f"({event.usage.completion_tokens} tokens, {event.usage.cached_tokens} of "
                          f"{event.usage.prompt_tokens} prompt tokens from cache, first token after "
                          f"{event.timings.ttft_ms:.0f} ms)", file=sys.stderr)
        if history_file is not None:
            history_file.parent.mkdir(parents=True, exist_ok=True)
            history_file.write_text(json.dumps(messages, indent=1))
        return 0

    return run_async(ask)
