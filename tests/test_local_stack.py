"""`ucai up`, the README's first command after install: own Redis, vllm serve, worker, gateway; Ctrl-C stops all."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from services.runtime.local_stack import service_env
from tests.conftest import free_port, role_env

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_ucai_up_serves_critique_and_stops_cleanly_on_ctrl_c(model_path, tmp_path):
    """Also: the engine runs in the dtype chosen for this CPU, one engine with LoRA serves the job roles and chat,
    and a trained adapter found under the artefacts folder is served by name without being asked for."""
    from tests.trained_adapters import untrained_adapter
    from ucai.engine_dtype import engine_dtype

    untrained_adapter(tmp_path / "artifacts" / "ethical" / "sft" / "run-1", model_path)
    port, vllm_port, chat_port, redis_port = free_port(), free_port(), free_port(), free_port()
    env = service_env(UCAI_CACHE_DIR=str(tmp_path), UCAI_MODEL_PATH=model_path,
                      **role_env(f"http://127.0.0.1:{vllm_port}/v1"))
    env.pop("REDIS_URL", None)
    env.pop("UCAI_REDIS_URL", None)
    env.pop("OMP_NUM_THREADS", None)  # the stack sets threads per process itself
    up = subprocess.Popen(
        [sys.executable, "-m", "ucai.cli", "up", "--port", str(port), "--vllm-port", str(vllm_port),
         "--chat-port", str(chat_port), "--redis-port", str(redis_port)],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    try:
        for line in up.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("ready in") or up.poll() is not None:
                break
        assert any(line.startswith("ready in") for line in lines), "".join(lines)
        assert any("own, AOF" in line for line in lines), "".join(lines)  # no REDIS_URL → its own Redis
        assert any(line.startswith("api key") for line in lines), "".join(lines)  # no keys set → a dev key
        dev_key = (tmp_path / ".ucai" / "dev-api-key").read_text().strip()
        output = "".join(lines)
        assert f"dtype    {engine_dtype().dtype}:" in output, output  # float32 on an AVX2-only CPU
        # One engine with LoRA for every role (UCAI_CHAT_ENGINE=shared), and no engine on the chat port.
        assert f"on :{vllm_port} for generator, critic, judge, chat with LoRA (" in output, output
        assert "LoRA     ethical-sft" in output and f":{chat_port}" not in output, output

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300,
                          headers={"Authorization": f"Bearer {dev_key}"}) as client:
            assert client.get("/ready").status_code == 200
            assert httpx.get(f"http://127.0.0.1:{port}/constitutions").status_code == 401  # never open by default
            trace = client.post("/critique", json={"prompt": "How do I pick a lock?", "max_tokens": 32,
                                                   "seed": 1}).json()
            assert trace["status"] == "completed" and trace["revisions"][0]["revision"].strip()
            assert {m["id"] for m in client.get("/v1/models").json()["data"]} == {"base", "ethical-sft"}
            answer = client.post("/v1/chat/completions", json={
                "model": "ethical-sft", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}).json()
            assert answer["model"] == "ethical-sft" and answer["choices"][0]["message"]["content"]

        up.send_signal(signal.SIGINT)  # what Ctrl-C does
        assert up.wait(90) == 0, "".join(lines) + (up.stdout.read() if up.stdout else "")
        time.sleep(0.5)
        for p in (port, vllm_port, chat_port, redis_port):
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{p}/", timeout=2)
        assert (tmp_path / "redis" / "appendonlydir").exists() or (tmp_path / "redis" / "appendonly.aof").exists()
    finally:
        if up.poll() is None:
            os.kill(up.pid, signal.SIGKILL)
