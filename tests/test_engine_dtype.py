"""The engine dtype comes from the CPU's flags (bf16 only where native), a setting overrides it, and the
launcher, the local stack and the test fixtures all take that one choice."""
from __future__ import annotations

import httpx
import pytest

from services.runtime.local_stack import engine_dtype
from services.runtime.vllm_launcher import with_cpu_dtype
from tests.conftest import launcher_processes
from ucai.engine_dtype import choose_engine_dtype, cpu_flags

AVX2_ONLY = {"fpu", "sse4_2", "avx", "avx2", "fma", "f16c"}  # e.g. AMD EPYC Zen 1
ZEN4 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512_bf16", "avx512_vnni"}
SAPPHIRE_RAPIDS = AVX2_ONLY | {"avx512f", "amx_tile", "amx_bf16", "amx_int8"}


@pytest.mark.parametrize(("flags", "dtype"), [(AVX2_ONLY, "float32"), (AVX2_ONLY | {"avx512f"}, "float32"),
                                               (ZEN4, "bfloat16"), (SAPPHIRE_RAPIDS, "bfloat16")])
def test_bf16_only_where_the_cpu_has_it(flags, dtype):
    choice = choose_engine_dtype("auto", flags, cpu=True)
    assert choice.dtype == dtype
    assert ("no native bf16" in choice.reason) == (dtype == "float32")


def test_fp32_doubles_the_kv_cache_budget():
    assert choose_engine_dtype("auto", AVX2_ONLY, cpu=True).kvcache_gib == 2
    assert choose_engine_dtype("auto", ZEN4, cpu=True).kvcache_gib == 1


def test_the_setting_overrides_the_cpu_and_is_checked():
    assert choose_engine_dtype("bfloat16", AVX2_ONLY, cpu=True).dtype == "bfloat16"
    assert choose_engine_dtype("float32", ZEN4, cpu=True).reason == "set by UCAI_VLLM_DTYPE=float32"
    with pytest.raises(ValueError, match="UCAI_VLLM_DTYPE"):
        choose_engine_dtype("fp8", ZEN4, cpu=True)


def test_a_gpu_build_keeps_the_checkpoint_dtype():
    assert choose_engine_dtype("auto", AVX2_ONLY, cpu=False).dtype == "auto"


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_launcher_adds_the_dtype_only_when_none_is_given(monkeypatch):
    monkeypatch.setenv("UCAI_VLLM_DTYPE", "float32")
    from ucai.settings import get_settings

    get_settings.cache_clear()
    try:
        assert with_cpu_dtype(["serve", "/m", "--port", "1"]) == ["serve", "/m", "--port", "1", "--dtype", "float32"]
        assert with_cpu_dtype(["serve", "/m", "--dtype", "bfloat16"]) == ["serve", "/m", "--dtype", "bfloat16"]
        assert with_cpu_dtype(["serve", "/m", "--dtype=half"]) == ["serve", "/m", "--dtype=half"]
        assert with_cpu_dtype(["--version"]) == ["--version"]
    finally:
        get_settings.cache_clear()


@pytest.mark.slow
def test_the_suites_vllm_serve_runs_in_the_chosen_dtype(vllm_url):
    """The real engine the fixtures start was given the dtype this machine's CPU calls for (its command line)."""
    assert httpx.get(f"{vllm_url}/models", timeout=10).status_code == 200
    served = [args for _pid, args in launcher_processes(vllm_url)]
    assert served, f"no vllm serve at {vllm_url}"
    args = served[0]
    assert args[args.index("--dtype") + 1] == engine_dtype().dtype
