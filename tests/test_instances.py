"""A model run as several workers (`instances: 2`): concurrent requests use both, a conversation
stays on the worker that holds its KV state, and admission counts every instance."""

import asyncio

import pytest

from tests.helpers import make_config, running_manager
from voxbus.client import ModelClient

pytestmark = pytest.mark.models


async def test_two_instances_serve_concurrently_and_conversations_keep_their_cache(nats_server, tmp_path):
    config = make_config(nats_server.url, tmp_path / "cache", models={"piper-joe": {"instances": 2},
                                                                      "gemma3-270m": {"instances": 2}})
    async with running_manager(config) as (bus, manager):
        models = ModelClient.from_bus(bus)
        voice = manager.pool.slots["piper-joe"]
        await models.load("piper-joe")
        assert len(voice.workers) == 2 and len({w.pid for w in voice.workers}) == 2
        busy_at_once = 0

        async def watch():
            nonlocal busy_at_once
            while True:
                busy_at_once = max(busy_at_once, sum(w.state == "busy" for w in voice.workers))
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        text = "Two voices can speak at the same time when the machine has cores to spare."
        await asyncio.gather(*(models.synthesize(text) for _ in range(4)))
        watcher.cancel()
        assert busy_at_once == 2 and all(w.jobs == 2 for w in voice.workers), [w.jobs for w in voice.workers]
        info = {m.id: m for m in (await models.list_models()).models}["piper-joe"]
        assert info.instances == 2 and [w.index for w in info.workers] == [0, 1]
        assert info.ram_bytes == sum(w.peak_rss for w in voice.workers) > 0  # admission counts both

        llm = manager.pool.slots["gemma3-270m"]

        async def conversation(name: str) -> list:
            history = [{"role": "system", "content": "You answer briefly."}]
            usages = []
            for question in ("Name a fruit.", "Name another one.", "And a vegetable?"):
                history.append({"role": "user", "content": question})
                done = await models.complete(messages=history, conversation=name, max_tokens=8, temperature=0.0)
                history.append({"role": "assistant", "content": done.text})
                usages.append((done.usage, llm.queue.affinity.get(name)))
            return usages

        a, b = await asyncio.gather(conversation("conv-a"), conversation("conv-b"))
        assert len(llm.workers) == 2
        for usages in (a, b):
            workers = {w for _, w in usages}
            assert len(workers) == 1, usages  # every turn ran where its KV state is
            for usage, _ in usages[1:]:  # later turns evaluate only what is new
                assert usage.cached_tokens >= usage.prompt_tokens - 16, usages
        assert {w.jobs for w in llm.workers} != {0}
