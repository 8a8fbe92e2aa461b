"""GPU paths: NVML readings and llama.cpp CUDA offload. Skipped, saying so, where no NVIDIA GPU
is present (CI has none); docs/BENCHMARKS.md records GPU results when a GPU machine ran them."""

import pytest

from voxbus.manager.resources import Resources

pytestmark = pytest.mark.gpu

resources = Resources()
needs_gpu = pytest.mark.skipif(not resources.has_gpu, reason="no NVIDIA GPU/driver on this machine (NVML reports none)")


def test_without_a_gpu_nvml_reports_none():
    if resources.has_gpu:
        pytest.skip("this machine has a GPU")
    assert resources.gpus() == [] and resources.vram_total() == 0 and resources.gpu_process_bytes() == 0


@needs_gpu
def test_nvml_reports_each_gpu():
    gpus = resources.gpus()
    assert gpus and all(g.total_bytes > 0 and g.used_bytes + g.free_bytes <= g.total_bytes * 1.01 for g in gpus)


@needs_gpu
async def test_llm_offloads_to_the_gpu(nats_server, tmp_path):
    from voxbus.client import ModelClient
    from voxbus.manager.backends.llama import LlamaBackend
    from tests.helpers import make_config, running_manager

    if not LlamaBackend.supports_cuda():
        pytest.skip("llama-cpp-python was built without GPU offload")
    config = make_config(nats_server.url, tmp_path / "cache", models={"gemma3-270m": {"device": "cuda"}})
    async with running_manager(config) as (bus, manager):
        done = await ModelClient.from_bus(bus).complete("Hello", max_tokens=4, temperature=0)
        assert done.usage.completion_tokens == 4
        assert manager.pool.slots["gemma3-270m"].vram > 0
