"""Training stages started warm: `python -m training.warm_start` imports torch, transformers, PEFT, TRL and datasets
once, then forks one child per stage it is asked for. Each child runs `python -m training`'s main with its own argv,
environment, working folder and log, and exits with its code, as a cold `python -m training` process would.

Why: on the CPU a one-step stage of the bundled model spends most of its time importing (2-core Zen 4, one core:
9.1-9.9 s cold against 3.6 s forked from a process that had imported, README "Training stages start warm"), and
`ucai experiment run` starts one process per stage and constitution. The experiment runner uses it
(`WarmStarter`); `python -m training` alone is unchanged.

Requests and replies are JSON lines of the pydantic models below, on the server's stdin and stdout. The server is
single-threaded (forking a threaded process is unsafe) and imports with one OpenMP thread (so no thread pool exists
to fork). On a machine with a GPU and a CUDA build of torch it does not serve (`Ready.warm` false: a forked child
cannot use CUDA that its parent touched) and the caller starts stages cold.
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from ucai.child_processes import die_with_parent

# What every stage imports before it computes; the stage modules are named by the stage table.
PRELOAD = ("torch", "transformers", "peft", "datasets", "trl", "matplotlib.pyplot")


class StageRequest(BaseModel):
    kind: Literal["run"] = "run"
    id: int
    argv: list[str] = Field(description="`python -m training`'s arguments: the stage and its options")
    env: dict[str, str] = Field(description="the child's whole environment")
    cwd: str
    log: str = Field(description="file the child's stdout and stderr are appended to")


class Ready(BaseModel):
    kind: Literal["ready"] = "ready"
    pid: int
    warm: bool
    preload_s: float
    reason: str = ""


class Started(BaseModel):
    kind: Literal["started"] = "started"
    id: int
    pid: int


class Exited(BaseModel):
    kind: Literal["exited"] = "exited"
    id: int
    returncode: int


REPLY = TypeAdapter(Annotated[Ready | Started | Exited, Field(discriminator="kind")])


# --- the server ------------------------------------------------------------------------------------------------------
def _preload() -> tuple[bool, str]:
    """Import what every stage imports; (False, why) where forked children could not train."""
    import glob
    import importlib

    import torch

    # A child cannot use CUDA once its parent has touched it, and importing TRL's extras can (a CUDA check is enough).
    # On a GPU the imports are a rounding error of a stage anyway: there, every stage starts cold.
    if torch.backends.cuda.is_built() and glob.glob("/dev/nvidia[0-9]*"):
        return False, "a GPU with a CUDA build of torch (a forked child cannot use CUDA its parent touched)"
    from training.stages import STAGES

    for module in (*PRELOAD, *{stage.entry.partition(":")[0] for stage in STAGES.values()}):
        importlib.import_module(module)
    return True, ""


def _child(request: StageRequest, replies: int) -> None:
    """In the forked child: become `python -m training ARGV` with the request's environment and log; never return."""
    code = 1
    try:
        die_with_parent()
        os.close(replies)  # the server's alone: its caller sees the end of it when the server ends
        log = os.open(request.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # not the server's request pipe
        os.close(null)
        os.chdir(request.cwd)
        os.environ.clear()
        os.environ.update(request.env)
        import torch

        from ucai.settings import get_settings

        get_settings.cache_clear()
        # The server imported torch with one OpenMP thread (so it never started a thread pool to fork); a cold
        # process would take OMP_NUM_THREADS, or every core.
        torch.set_num_threads(int(request.env.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0))))
        sys.argv = [sys.argv[0], *request.argv]
        from training.cli import main

        code = main(request.argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child reports every failure through its log and exit code
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> int:
    # Replies go to the original stdout alone; anything a library prints goes to stderr (the server's log).
    replies = os.dup(1)
    os.dup2(2, 1)

    def reply(message: BaseModel) -> None:
        os.write(replies, (message.model_dump_json() + "\n").encode())

    started = time.monotonic()
    warm, reason = _preload()
    reply(Ready(pid=os.getpid(), warm=warm, preload_s=round(time.monotonic() - started, 2), reason=reason))
    if not warm:
        return 0
    children: dict[int, int] = {}  # pid -> request id
    stdin, buffer, open_ = sys.stdin.fileno(), b"", True
    while open_ or children:
        readable, _, _ = select.select([stdin] if open_ else [], [], [], 0.2)
        if readable:
            chunk = os.read(stdin, 65536)
            open_ = bool(chunk)
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = StageRequest.model_validate_json(line)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _child(request, replies)
                children[pid] = request.id
                reply(Started(id=request.id, pid=pid))
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            reply(Exited(id=children.pop(pid), returncode=os.waitstatus_to_exitcode(status)))
    return 0


# --- the client ------------------------------------------------------------------------------------------------------
class WarmStartUnavailable(RuntimeError):
    """The server is not warm (it said why) or has gone: start the stage cold."""


class WarmStarter:
    """One server, started at once (it imports while the caller goes on); `run` forks a stage from it and waits. Safe
    to call from several threads: stages run side by side, each in its own child."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        # One OpenMP thread in the server: the children set their own (`_child`).
        with open(log, "ab") as server_log:
            self._process = subprocess.Popen([sys.executable, "-m", "training.warm_start"],
                                             env={**env, "OMP_NUM_THREADS": "1"}, stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=server_log, preexec_fn=die_with_parent)
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._info: Ready | None = None
        self._next_id = 0
        self._started: dict[int, int] = {}
        self._exited: dict[int, int] = {}
        self._changed = threading.Condition(self._lock)
        self._gone = False
        threading.Thread(target=self._read, daemon=True, name="warm-start replies").start()

    def _read(self) -> None:
        for line in self._process.stdout:  # type: ignore[union-attr]
            try:
                message = REPLY.validate_json(line)
            except ValidationError:
                continue  # not a reply (the server writes nothing else there)
            with self._changed:
                if isinstance(message, Ready):
                    self._info = message
                    self._ready.set()
                elif isinstance(message, Started):
                    self._started[message.id] = message.pid
                else:
                    self._exited[message.id] = message.returncode
                self._changed.notify_all()
        with self._changed:
            self._gone = True
            self._ready.set()
            self._changed.notify_all()

    def ready(self, timeout_s: float = 600) -> Ready:
        """The server's hello, once it has imported; raises WarmStartUnavailable if it is not warm or has gone."""
        if not self._ready.wait(timeout_s):
            raise WarmStartUnavailable(f"the warm-start server was not ready in {timeout_s:.0f} s")
        if self._info is None:
            raise WarmStartUnavailable(f"the warm-start server exited (code {self._process.poll()}) before it was "
                                       "ready")
        if not self._info.warm:
            raise WarmStartUnavailable(self._info.reason)
        return self._info

    def run(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> int:
        """`python -m training ARGV` in a forked child; its exit code. Interrupted, it stops the child (SIGTERM)."""
        self.ready()
        with self._lock:
            self._next_id += 1
            request = StageRequest(id=self._next_id, argv=argv, env=env, cwd=str(cwd or Path.cwd()), log=str(log))
            try:
                self._process.stdin.write((request.model_dump_json() + "\n").encode())  # type: ignore[union-attr]
                self._process.stdin.flush()  # type: ignore[union-attr]
            except (BrokenPipeError, ValueError) as exc:
                raise WarmStartUnavailable(f"the warm-start server has gone: {exc}") from exc
        try:
            with self._changed:
                while request.id not in self._exited:
                    if self._gone:
                        raise WarmStartUnavailable("the warm-start server exited while a stage ran")
                    self._changed.wait(1.0)
                return self._exited.pop(request.id)
        except BaseException:
            pid = self._started.get(request.id)
            if pid is not None and request.id not in self._exited:
                with contextlib.suppress(ProcessLookupError):  # it ended before its reply was read
                    os.kill(pid, signal.SIGTERM)
            raise

    def close(self) -> None:
        """Stop the server at once (still importing or idle); a stage still running gets SIGTERM with it."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        if self._process.stdin is not None:
            self._process.stdin.close()


if __name__ == "__main__":
    sys.exit(serve())
