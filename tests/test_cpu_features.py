"""The llama.cpp extra-buffer choice as a plain function of the CPU's flags (pure logic: the
/proc/cpuinfo texts are samples, the decision is what runs on every machine)."""

from voxbus.manager.backends.cpu_features import cpu_flags, has_amx, llama_extra_buffers

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8
"""
EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512_bf16 avx512_vnni
"""
ARM = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32
"""


def test_amx_cpus_turn_the_extra_buffers_off_and_others_keep_them():
    intel, amd, arm = cpu_flags(SAPPHIRE_RAPIDS), cpu_flags(EPYC), cpu_flags(ARM)
    assert has_amx(intel) and not has_amx(amd) and not has_amx(arm)
    assert llama_extra_buffers(intel) is False
    assert llama_extra_buffers(amd) is True and llama_extra_buffers(arm) is True
    assert "asimd" in arm  # ARM kernels name the line "Features"


def test_the_operators_setting_wins():
    intel = cpu_flags(SAPPHIRE_RAPIDS)
    assert llama_extra_buffers(intel, override=True) is True
    assert llama_extra_buffers(cpu_flags(EPYC), override=False) is False


def test_no_cpuinfo_means_no_flags_and_the_default():
    assert cpu_flags("") == frozenset() and llama_extra_buffers(cpu_flags("")) is True


def test_this_machine_is_read_at_run_time():
    flags = cpu_flags()
    assert flags, "/proc/cpuinfo has a flags line on Linux"
    assert llama_extra_buffers(flags) == (not ({"amx_tile", "amx_int8", "amx_bf16"} & flags))
