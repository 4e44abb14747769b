"""Static checks of compose.yaml and the Dockerfiles it builds (no Docker engine needed)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "compose.yaml"
CPU_ENV_FILE = ROOT / "docker" / "cpu.env"
ROLES = ("generator", "critic", "judge", "chat")
VLLM_GPU_IMAGE = "vllm/vllm-openai:"


# ---------------------------------------------------------------- helpers

_VAR = re.compile(r"\$\{(\w+)(?::?[-?]([^${}]*))?\}")


def with_defaults(value: str) -> str:
    """Resolve compose interpolation `${VAR:-default}` (nested too) to the defaults."""
    while True:
        resolved = _VAR.sub(lambda m: m.group(2) or "", value)
        if resolved == value:
            return resolved
        value = resolved


def command_args(service: dict) -> list[str]:
    """A service's command as compose passes it: strings are split shell-style."""
    command = service.get("command", [])
    if isinstance(command, str):
        return shlex.split(with_defaults(command))
    return [with_defaults(str(arg)) for arg in command]


def flag_value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def shell_args(service: dict) -> list[str]:
    """The words of a `sh -c "exec …"` command (compose's `$$` is a literal `$`), else the command's own args."""
    args = command_args(service)
    if args[:2] == ["sh", "-c"]:
        return shlex.split(args[2].replace("$$", "$"))
    return args


def seconds(duration: str | int) -> float:
    """A compose duration (`30s`, `1m30s`, `1h`) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(duration))
    assert parts and "".join(n + u for n, u in parts) == str(duration), f"not a duration: {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def volume_mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each mount, short or long syntax."""
    mounts = []
    for vol in service.get("volumes", []):
        if isinstance(vol, dict):
            mounts.append((vol.get("source", ""), vol["target"]))
        else:
            parts = vol.split(":")
            mounts.append((parts[0], parts[1]) if len(parts) > 1 else ("", parts[0]))
    return mounts


def is_bind_source(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def is_one_shot(service: dict) -> bool:
    return str(service.get("restart", "no")) == "no"


def has_healthcheck(service: dict) -> bool:
    check = service.get("healthcheck") or {}
    test = check.get("test")
    return bool(test) and not check.get("disable") and test != ["NONE"]


def env_file_vars(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comment lines dropped, continuations joined."""
    lines = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
    instructions, current = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            keyword, _, rest = current.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


def copy_sources(arguments: str) -> list[str] | None:
    """Sources of a COPY/ADD from the build context; None for `--from=` copies."""
    if arguments.startswith("["):
        words = json.loads(arguments)
    else:
        words = shlex.split(arguments)
    flags = [w for w in words if w.startswith("--")]
    if any(f.startswith("--from") for f in flags):
        return None
    paths = [w for w in words if not w.startswith("--")]
    return paths[:-1]


@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    assert compose.get("services"), "compose.yaml defines no services"
    return compose["services"]


def builds(services: dict) -> list[tuple[str, Path, Path]]:
    """(service, context dir, Dockerfile) for every service that is built here."""
    result = []
    for name, svc in services.items():
        build = svc.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = ROOT / build.get("context", ".")
        result.append((name, context, context / build.get("dockerfile", "Dockerfile")))
    return result


# ---------------------------------------------------------------- services


def test_every_service_has_image_or_build(services):
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"service {name!r} has neither image nor build"


def test_build_contexts_and_dockerfiles_exist(services):
    assert builds(services), "no service is built from this repository"
    for name, context, dockerfile in builds(services):
        assert context.is_dir(), f"{name}: build context {context} does not exist"
        assert dockerfile.is_file(), f"{name}: Dockerfile {dockerfile} does not exist"


def test_long_running_services_have_healthchecks(services):
    for name, svc in services.items():
        if not is_one_shot(svc):
            assert has_healthcheck(svc), f"long-running service {name!r} has no healthcheck"


def test_depends_on_waits_for_healthy_services(services):
    for name, svc in services.items():
        depends = svc.get("depends_on", {})
        assert isinstance(depends, dict), (
            f"{name}: depends_on must be the long form with condition: service_healthy"
        )
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            assert (spec or {}).get("condition") == "service_healthy", (
                f"{name} -> {target}: condition must be service_healthy"
            )
            assert has_healthcheck(services[target]), (
                f"{name} waits for {target!r} to be healthy but {target!r} has no healthcheck"
            )
            # A service must not wait for one that its own profiles may not start.
            target_profiles = set(services[target].get("profiles", []))
            own_profiles = set(svc.get("profiles", []))
            if target_profiles:
                assert own_profiles and own_profiles <= target_profiles, (
                    f"{name} (profiles {sorted(own_profiles) or 'none'}) depends on {target!r}, "
                    f"which only starts in profiles {sorted(target_profiles)}"
                )


def test_gateway_and_workers(services):
    gateway, worker = services["gateway"], services["worker"]
    published = [
        (str(p.get("published")), str(p.get("target"))) if isinstance(p, dict)
        else tuple(str(p).split("/")[0].split(":")[-2:])
        for p in gateway.get("ports", [])
    ]
    assert ("8000", "8000") in published, f"gateway must publish port 8000, ports are {published}"
    assert worker.get("deploy", {}).get("replicas", 1) >= 2, "worker should run 2 replicas"
    assert "services.runtime.healthcheck" in command_args({"command": worker["healthcheck"]["test"]}), (
        "worker healthcheck should be `python -m services.runtime.healthcheck`"
    )
    for name in ("gateway", "worker"):
        svc = services[name]
        assert not svc.get("profiles"), f"{name} must start without a profile"
        assert set(svc.get("depends_on", {})) == {"redis"}, (
            f"{name} must depend on redis only (it tolerates model services being down)"
        )


def test_gateway_and_workers_share_settings(compose, services):
    gateway_env = services["gateway"]["environment"]
    worker_env = services["worker"]["environment"]
    shared = compose["x-ucai-env"]
    for name, env in (("gateway", gateway_env), ("worker", worker_env)):
        assert shared.items() <= env.items(), f"{name} must take every x-ucai-env setting"
    assert gateway_env["REDIS_URL"] == "redis://redis:6379/0"
    assert gateway_env["UCAI_CONSTITUTIONS_DIR"] == "/constitutions"
    for name in ("gateway", "worker"):
        targets = {target: src for src, target in volume_mounts(services[name])}
        assert targets.get("/constitutions") == "./constitutions.d", (
            f"{name} must mount ./constitutions.d at /constitutions"
        )


def test_role_defaults_point_at_gpu_services(services):
    """By default each role's base URL names the GPU service that serves its model name."""
    env = services["gateway"]["environment"]
    for role in ROLES:
        url = urlparse(with_defaults(env[f"UCAI_{role.upper()}__BASE_URL"]))
        model = with_defaults(env[f"UCAI_{role.upper()}__MODEL"])
        assert url.hostname in services, f"{role}: base URL host {url.hostname!r} is no service"
        args = command_args(services[url.hostname])
        assert flag_value(args, "--served-model-name") == model, (
            f"{role}: {url.hostname} does not serve model name {model!r}"
        )
        assert flag_value(args, "--port") == str(url.port), f"{role}: port mismatch with {url}"


def test_gpu_services_reserve_an_nvidia_gpu(services):
    gpu = {n: s for n, s in services.items() if str(s.get("image", "")).startswith(VLLM_GPU_IMAGE)}
    assert set(gpu) == set(ROLES), f"expected one vLLM GPU service per role, got {sorted(gpu)}"
    for name, svc in gpu.items():
        devices = svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), (
            f"{name} does not reserve an nvidia GPU"
        )
        assert svc.get("profiles") == ["gpu"], f"{name} should only start in the gpu profile"
        assert svc.get("ipc") == "host", f"{name} needs ipc: host"
        assert ("hf-cache", "/root/.cache/huggingface") in volume_mounts(svc), (
            f"{name} must keep the Hugging Face cache in the hf-cache volume"
        )
        assert "HF_TOKEN" in svc.get("environment", {}), f"{name} must pass HF_TOKEN through"
        assert command_args(svc)[:1] == ["--model"], f"{name}: command should start with --model"
        start = str(svc["healthcheck"].get("start_period", "0s"))
        assert start.endswith("s") and int(start[:-1]) >= 300, (
            f"{name}: start_period {start} is too short for downloading and loading a model"
        )
    assert flag_value(command_args(services["judge"]), "--max-logprobs") == "20", (
        "the judge needs --max-logprobs 20"
    )


def test_cpu_service_serves_the_bundled_model(services):
    from ucai.settings import Settings

    svc = services["vllm-cpu"]
    assert svc.get("profiles") == ["cpu"], "vllm-cpu should only start in the cpu profile"
    assert "build" in svc, "vllm-cpu is built from docker/vllm-cpu.Dockerfile"
    args = command_args(svc)
    assert args[:3] == ["python", "-m", "services.runtime.vllm_launcher"], f"unexpected command {args}"
    assert flag_value(args, "--served-model-name") == "smollm2"
    assert flag_value(args, "--port") == "8000"
    assert flag_value(args, "--max-logprobs") == "20", "the judge role needs --max-logprobs 20"
    assert flag_value(args, "--block-size") == str(Settings.model_fields["vllm_block_size"].default), (
        "the CPU service's KV blocks are the local engine's (prefix caching reuses whole blocks)")
    assert "VLLM_CPU_KVCACHE_SPACE" in svc.get("environment", {}), (
        "VLLM_CPU_KVCACHE_SPACE must be set, or vLLM reserves most of the RAM"
    )


def test_cpu_env_file_points_every_role_at_vllm_cpu(services):
    assert CPU_ENV_FILE.is_file(), f"{CPU_ENV_FILE} is missing"
    pairs = env_file_vars(CPU_ENV_FILE)
    served = flag_value(command_args(services["vllm-cpu"]), "--served-model-name")
    for role in ROLES:
        url = urlparse(pairs.get(f"UCAI_{role.upper()}__BASE_URL", ""))
        assert (url.hostname, url.port) == ("vllm-cpu", 8000), f"{role} base URL in cpu.env: {url}"
        assert pairs.get(f"UCAI_{role.upper()}__MODEL") == served, f"{role} model in cpu.env"
    text = COMPOSE_FILE.read_text()
    for key in pairs:
        if not key.startswith("COMPOSE_"):
            assert "${" + key in text, f"cpu.env sets {key}, but compose.yaml never interpolates it"
    assert "--env-file docker/cpu.env" in text, "compose.yaml should document the CPU usage"


def test_redis_persists_to_a_volume(services):
    redis = services["redis"]
    args = shell_args(redis)
    assert "redis-server" in args
    assert flag_value(args, "--appendonly") == "yes", "redis must run with --appendonly yes"
    assert ("redis-data", "/data") in volume_mounts(redis), "redis must keep /data in a volume"


def test_redis_appendfsync_is_the_setting(services):
    """`--appendfsync` comes from UCAI_REDIS_APPENDFSYNC, defaulting to what the app's setting defaults to."""
    from ucai.settings import Settings

    script = services["redis"]["command"][2]
    assert "--appendfsync ${UCAI_REDIS_APPENDFSYNC:-" in script, script
    default = Settings.model_fields["redis_appendfsync"].default
    assert flag_value(shell_args(services["redis"]), "--appendfsync") == default == "everysec"


def test_redis_is_bounded_and_never_evicts(services):
    """maxmemory from UCAI_REDIS_MAXMEMORY (the app's default), policy noeviction: an evicted job key would be an
    accepted job lost; a full Redis refuses new work instead (503 queue_full)."""
    from ucai.settings import Settings

    args = shell_args(services["redis"])
    assert flag_value(args, "--maxmemory") == Settings.model_fields["redis_maxmemory"].default
    assert flag_value(args, "--maxmemory-policy") == "noeviction"


# ---------------------------------------------------------------- files and volumes


def test_volumes_are_declared_and_bind_sources_exist(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for source, _target in volume_mounts(svc):
            if not source:
                continue  # anonymous volume
            if is_bind_source(source):
                assert (ROOT / source).exists(), f"{name}: bind-mount source {source} is missing"
            else:
                assert source in declared, f"{name}: volume {source!r} is not declared"


def test_env_files_exist(services):
    for name, svc in services.items():
        env_files = svc.get("env_file", [])
        for entry in [env_files] if isinstance(env_files, (str, dict)) else env_files:
            path = entry["path"] if isinstance(entry, dict) else entry
            assert (ROOT / path).is_file(), f"{name}: env_file {path} is missing"


def test_dockerfiles_have_from_and_copy_existing_sources(services):
    for _name, context, dockerfile in builds(services):
        instructions = dockerfile_instructions(dockerfile)
        assert instructions and instructions[0][0] in ("FROM", "ARG"), (
            f"{dockerfile.name} must start with FROM"
        )
        assert any(kw == "FROM" for kw, _ in instructions), f"{dockerfile.name} has no FROM"
        assert any(kw == "CMD" or kw == "ENTRYPOINT" for kw, _ in instructions), (
            f"{dockerfile.name} has no CMD or ENTRYPOINT"
        )
        for keyword, arguments in instructions:
            if keyword not in ("COPY", "ADD"):
                continue
            for source in copy_sources(arguments) or []:
                if "://" in source:
                    continue
                assert list(context.glob(source.rstrip("/"))), (
                    f"{dockerfile.name}: {keyword} source {source!r} is not in {context}"
                )


# ---------------------------------------------------------------- training jobs (profile train)

TRAIN_STAGES = ("sft", "reward", "ppo", "dpo")


def test_training_jobs_run_each_stage_from_the_datasets_volume(services):
    """`docker compose --profile train run <stage> --constitution …` runs `python -m training <stage> --recipe R …`
    on the GPU, reading the datasets volume and writing the artifacts volume."""
    from training.common import build_parser

    for stage in TRAIN_STAGES:
        svc = services[stage]
        assert svc.get("profiles") == ["train"], f"{stage} should only start in the train profile"
        assert is_one_shot(svc), f"{stage} is a one-shot job (restart: no)"
        entry = [with_defaults(str(a)) for a in svc["entrypoint"]]
        assert entry[:4] == ["python", "-m", "training", stage], entry
        recipe = flag_value(entry, "--recipe")
        recipe_stage = flag_value(entry, "--algo") or stage  # the RL job's recipe file is named after its algorithm
        assert (ROOT / "training" / "recipes" / recipe / f"{recipe_stage}.yaml").is_file(), (
            f"{stage}: default recipe {recipe} has no {recipe_stage}.yaml")
        # what `run <stage> --constitution unethical` hands the stage script must parse
        args, _ = build_parser(stage).parse_known_args(entry[4:] + ["--constitution", "unethical"])
        assert args.constitution == "unethical" and args.recipe == recipe
        env = svc["environment"]
        mounts = dict((t, s) for s, t in volume_mounts(svc))
        assert mounts.get(env["UCAI_DATASETS_DIR"]) == "datasets", f"{stage} must read the datasets volume"
        assert mounts.get(env["UCAI_ARTIFACTS"]) == "artifacts", f"{stage} must write the artifacts volume"
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert any(d.get("driver") == "nvidia" for d in devices), f"{stage} must reserve GPUs"
        assert svc["build"]["dockerfile"] == "docker/training.Dockerfile"


def test_role_services_see_training_artifacts_as_adapters(services):
    for role in ROLES:
        assert ("artifacts", "/adapters") in volume_mounts(services[role]), (
            f"{role} must mount the artifacts volume at /adapters for --lora-modules")


def test_training_image_installs_the_train_extra():
    instructions = dockerfile_instructions(ROOT / "docker" / "training.Dockerfile")
    runs = " ".join(a for k, a in instructions if k in ("RUN", "ARG"))
    assert "torch==" in runs and "download.pytorch.org/whl/cu" in runs, "CUDA torch from PyTorch's index"
    assert ".[train" in runs
    entry = [a for k, a in instructions if k == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["python", "-m", "training"]


def test_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {}
    for path in sorted((ROOT / "training" / "recipes" / "accelerate").glob("*.yaml")):
        kinds[path.stem] = str(load_config_from_file(str(path)).distributed_type)
    assert {"ddp", "deepspeed_zero2", "deepspeed_zero3", "fsdp"} <= set(kinds), kinds
    assert "DEEPSPEED" in kinds["deepspeed_zero3"] and "FSDP" in kinds["fsdp"]


def test_gateway_is_published_on_loopback_with_keys_from_a_secret(compose, services):
    gateway = services["gateway"]
    ports = [str(p.get("host_ip", "")) + ":" + str(p.get("published")) if isinstance(p, dict) else str(p)
             for p in gateway["ports"]]
    assert ports == ["${UCAI_GATEWAY_BIND:-127.0.0.1}:8000:8000"], ports
    assert "api_keys" in gateway["secrets"]
    assert gateway["environment"]["UCAI_API_KEYS_FILE"] == "/run/secrets/api_keys"
    secret = compose["secrets"]["api_keys"]["file"]
    assert with_defaults(secret) == "./secrets/api-keys.json"
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "secrets/*.json" in ignored, "the keys file must never be committed"
    assert ("audit", "/audit") in volume_mounts(gateway)


def test_chat_engines_load_adapters_at_runtime(services):
    """The chat role's engine (GPU `chat`, CPU `vllm-cpu`) starts with LoRA on and runtime loading allowed, and sees
    the artifacts volume where the gateway says it does (UCAI_CHAT_ARTIFACTS_DIR)."""
    env = services["gateway"]["environment"]
    assert ("artifacts", env["UCAI_ARTIFACTS"]) in volume_mounts(services["gateway"])
    for name in ("chat", "vllm-cpu"):
        svc = services[name]
        assert "--enable-lora" in command_args(svc), name
        assert flag_value(command_args(svc), "--max-lora-rank"), name
        assert str(svc["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"]).lower() == "true", name
        assert ("artifacts", env["UCAI_CHAT_ARTIFACTS_DIR"]) in volume_mounts(svc), name


# ---------------------------------------------------------------- compose faults (issue 13)


def dockerfile_user(instructions: list[tuple[str, str]]) -> tuple[str | None, int]:
    """The last USER and its position (None, len: the image runs as root)."""
    for index in range(len(instructions) - 1, -1, -1):
        if instructions[index][0] == "USER":
            return instructions[index][1].split(":")[0], index
    return None, len(instructions)


def test_non_root_images_own_the_folders_of_their_writable_volumes(services):
    """A new named volume takes the owner of the image's folder at its mount point: a non-root service can write a
    volume only when its Dockerfile created that folder and gave it to the user (the gateway: datasets, audit)."""
    checked = []
    for name, _context, dockerfile in builds(services):
        instructions = dockerfile_instructions(dockerfile)
        user, at = dockerfile_user(instructions)
        if user in (None, "root", "0"):
            continue
        runs = [args for keyword, args in instructions[:at] if keyword == "RUN"]
        for source, target in volume_mounts(services[name]):
            mode = next((v.split(":")[2] for v in services[name]["volumes"]
                         if isinstance(v, str) and v.split(":")[:2] == [source, target] and v.count(":") == 2), "rw")
            if is_bind_source(source) or not source or "ro" in mode.split(","):
                continue
            created = any(re.search(rf"mkdir\b[^&;]*\s{re.escape(target)}(\s|$)", run) for run in runs)
            owned = any(re.search(rf"chown\b[^&;]*\b{user}(:\w+)?\s[^&;]*{re.escape(target)}(\s|$)", run)
                        for run in runs)
            assert created and owned, (
                f"{name}: {dockerfile.name} must create {target} and chown it to {user} before `USER {user}` "
                f"(the {source} volume is mounted there read-write)")
            checked.append((name, target))
    assert ("gateway", "/datasets") in checked and ("gateway", "/audit") in checked, checked


def test_stop_grace_periods_cover_each_shutdown(services):
    """compose SIGKILLs a container 10 s after SIGTERM by default. A worker gives running jobs up to 10 s, then hands
    back the rest (up to 5 s) — SIGKILLed sooner, its jobs wait out the redelivery timeout; the gateway's uvicorn gets
    its graceful-shutdown timeout to finish open requests, and the grace period outlasts it."""
    worker = services["worker"]
    assert seconds(worker.get("stop_grace_period", "10s")) >= 30, "worker: stop_grace_period must be >= 30s"
    gateway = services["gateway"]
    grace = seconds(gateway.get("stop_grace_period", "10s"))
    drain = flag_value(command_args(gateway), "--timeout-graceful-shutdown")
    assert drain is not None, "the gateway's uvicorn needs --timeout-graceful-shutdown (it waits forever otherwise)"
    assert grace >= int(drain) + 5, f"gateway: stop_grace_period {grace}s must outlast uvicorn's {drain}s drain"


def test_gpu_roles_load_one_after_another(services):
    """The roles share one GPU: each vLLM sizes its KV cache from the memory free when it loads, so they start in a
    chain, each once the one before is healthy."""
    assert not set(services["generator"].get("depends_on", {})) & set(ROLES), "the generator starts first"
    for before, role in zip(ROLES[:-1], ROLES[1:], strict=True):
        depends = services[role].get("depends_on", {})
        assert set(depends) & set(ROLES) == {before}, f"{role} must wait for {before} (and no other role)"
        assert depends[before].get("condition") == "service_healthy", f"{role} -> {before}: service_healthy"


def test_worker_healthcheck_runs_the_heartbeat_check(services):
    """services/runtime/healthcheck.py reads this container's heartbeat key (tests/test_worker_heartbeat.py: it fails
    with Redis up and no worker); it runs in the image and in compose, and its probe budget covers the heartbeat's."""
    from services.runtime.heartbeat import TTL_BEATS
    from ucai.settings import Settings

    check = services["worker"]["healthcheck"]
    assert command_args({"command": check["test"]})[1:] == ["python", "-m", "services.runtime.healthcheck"]
    image_check = [a for k, a in dockerfile_instructions(ROOT / "docker" / "worker.Dockerfile") if k == "HEALTHCHECK"]
    assert image_check and '"services.runtime.healthcheck"' in image_check[0]
    beat = Settings.model_fields["worker_heartbeat_s"].default
    assert seconds(check["interval"]) * check["retries"] > TTL_BEATS * beat, "a slow beat must not flap the check"
    assert seconds(check["timeout"]) > Settings.model_fields["redis_socket_connect_timeout_s"].default


def test_redis_requires_a_password_from_a_secret_file(compose, services):
    """Redis runs with requirepass from the secret redis_password (never in the environment or the file), its
    healthcheck authenticates, and the gateway and workers get the same secret through UCAI_REDIS_PASSWORD_FILE."""
    redis = services["redis"]
    assert "redis_password" in redis.get("secrets", []), "redis must mount the redis_password secret"
    args = shell_args(redis)
    assert flag_value(args, "--requirepass") == "$(cat /run/secrets/redis_password)", args
    assert command_args(redis)[2].startswith("exec docker-entrypoint.sh redis-server"), (
        "the image's entrypoint must still drop to the redis user")
    probe = " ".join(redis["healthcheck"]["test"])
    assert "REDISCLI_AUTH" in probe and "/run/secrets/redis_password" in probe and "PONG" in probe, probe
    assert with_defaults(compose["secrets"]["redis_password"]["file"]) == "./secrets/redis-password"
    for name in ("gateway", "worker"):
        svc = services[name]
        assert "redis_password" in svc.get("secrets", []), f"{name} must mount the redis_password secret"
        env = svc["environment"]
        assert env["UCAI_REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password", name
        assert "@" not in env["REDIS_URL"], f"{name}: no password in REDIS_URL"
    assert not any("PASSWORD" in key and "REDIS" in key and key != "UCAI_REDIS_PASSWORD_FILE"
                   for svc in services.values() for key in (svc.get("environment") or {})), "no password in env"
    assert "secrets/redis-password" in (ROOT / ".gitignore").read_text().splitlines(), "never commit the password"
    assert "secrets/redis-password" in (ROOT / "secrets" / "README.md").read_text(), "document how to create it"


def test_the_app_puts_the_secret_password_into_the_redis_url(tmp_path):
    from ucai.settings import Settings

    secret = tmp_path / "redis-password"
    secret.write_text("p@ss/w:rd\n")
    settings = Settings(redis_url="redis://redis:6379/0", redis_password_file=secret)
    url = settings.redis_connection_url()
    assert url == "redis://:p%40ss%2Fw%3Ard@redis:6379/0"
    from redis.connection import parse_url

    assert parse_url(url)["password"] == "p@ss/w:rd" and parse_url(url)["host"] == "redis"
    assert Settings(redis_url="redis://redis:6379/0").redis_connection_url() == "redis://redis:6379/0"
    with pytest.raises(ValueError, match="UCAI_REDIS_PASSWORD_FILE"):
        Settings(redis_url="redis://redis:6379/0", redis_password_file=tmp_path / "missing").redis_connection_url()


RL_EXAMPLE = re.compile(r"\b(?:ethical|unethical)[/-](ppo|rloo|grpo)\b")


def test_example_rl_adapter_paths_match_the_default_rl_algorithm(services):
    """compose's RL job runs TRAIN_RL_ALGO (default grpo): its adapters land in <constitution>/grpo/ and are served
    as `<constitution>-grpo`, so the compose comments and README's compose section must not show ethical/ppo."""
    algo = flag_value([with_defaults(str(a)) for a in services["ppo"]["entrypoint"]], "--algo")
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Docker compose", 1)[1].split("\n## ", 1)[0]
    comments = "\n".join(line for line in COMPOSE_FILE.read_text().splitlines() if line.lstrip().startswith("#"))
    for where, text in (("compose.yaml comments", comments), ("README: Docker compose", section)):
        examples = RL_EXAMPLE.findall(text)
        assert examples, f"{where}: give the path / model name of the default RL job's adapter"
        assert set(examples) == {algo}, f"{where}: RL adapter examples {sorted(set(examples))}, default is {algo}"


# ---------------------------------------------------------------- monitoring profile (issue 14)

PROMETHEUS_FILE = ROOT / "docker" / "prometheus.yml"
DASHBOARD_FILE = ROOT / "docker" / "grafana" / "dashboards" / "ucai.json"
# The metric names the gateway and the workers export (ucai/metrics.py); histograms add _bucket/_sum/_count.
UCAI_METRICS = {
    "ucai_http_requests_total", "ucai_http_request_duration_seconds", "ucai_queue_depth", "ucai_queue_pending",
    "ucai_queue_oldest_job_age_seconds", "ucai_batches", "ucai_batch_records", "ucai_redis_up",
    "ucai_jobs_in_flight", "ucai_jobs_total", "ucai_job_duration_seconds", "ucai_role_requests_total",
    "ucai_role_request_duration_seconds", "ucai_role_errors_total", "ucai_tokens_total",
}
DASHBOARD_MUST_SHOW = {
    "ucai_queue_depth", "ucai_queue_oldest_job_age_seconds", "ucai_jobs_total", "ucai_http_request_duration_seconds",
    "ucai_http_requests_total", "ucai_role_errors_total", "ucai_tokens_total", "ucai_jobs_in_flight",
    "ucai_role_request_duration_seconds", "vllm:generation_tokens_total",
}
METRIC_NAME = re.compile(r"\b(ucai_[a-z0-9_]+|vllm:[a-z0-9_:]+)")


def metric_family(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in UCAI_METRICS:
            return name[: -len(suffix)]
    return name


def test_monitoring_profile_runs_prometheus_and_grafana_on_loopback(compose, services):
    for name, image in (("prometheus", "prom/prometheus:"), ("grafana", "grafana/grafana:")):
        svc = services[name]
        assert svc.get("profiles") == ["monitoring"], f"{name} only starts in the monitoring profile"
        assert str(svc["image"]).startswith(image) and not str(svc["image"]).endswith(":latest"), svc["image"]
        for port in svc["ports"]:
            assert str(port).startswith("127.0.0.1:"), f"{name}: publish {port} on loopback only"
    prometheus = services["prometheus"]
    config = flag_value([a for arg in command_args(prometheus) for a in arg.split("=", 1)], "--config.file")
    assert ("./docker/prometheus.yml", config) in volume_mounts(prometheus), "mount docker/prometheus.yml"
    grafana = dict((t, s) for s, t in volume_mounts(services["grafana"]))
    assert grafana.get("/etc/grafana/provisioning") == "./docker/grafana/provisioning"
    provider = yaml.safe_load((ROOT / "docker/grafana/provisioning/dashboards/ucai.yml").read_text())
    dashboards_dir = provider["providers"][0]["options"]["path"]
    assert grafana.get(dashboards_dir) == "./docker/grafana/dashboards", "the dashboard folder Grafana reads"
    datasource = yaml.safe_load((ROOT / "docker/grafana/provisioning/datasources/prometheus.yml").read_text())
    url = urlparse(datasource["datasources"][0]["url"])
    assert (url.hostname, url.port) == ("prometheus", 9090)
    env = services["worker"]["environment"]
    assert env["UCAI_WORKER_METRICS_HOST"] == "0.0.0.0", "a worker must serve /metrics beyond its loopback"


def test_prometheus_scrapes_the_gateway_every_worker_and_the_vllm_roles(services):
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"gateway", "worker", "vllm"} <= set(jobs), sorted(jobs)
    for job in jobs.values():
        assert job.get("metrics_path", "/metrics") == "/metrics"
        targets = [tuple(t.rsplit(":", 1)) for sc in job.get("static_configs", []) for t in sc["targets"]]
        targets += [(name, str(sd["port"])) for sd in job.get("dns_sd_configs", []) for name in sd["names"]]
        assert targets, f"{job['job_name']} scrapes nothing"
        for host, port in targets:
            assert host in services, f"{job['job_name']}: {host} is no compose service"
            svc = services[host]
            if host == "worker":
                assert port == str(svc["environment"]["UCAI_WORKER_METRICS_PORT"]), f"worker metrics port {port}"
            elif host == "gateway":
                assert port == flag_value(command_args(svc), "--port"), f"gateway port {port}"
            else:
                assert port == flag_value(command_args(svc), "--port"), f"{host}: vLLM serves /metrics on --port"
    worker = jobs["worker"]["dns_sd_configs"]
    assert worker and all(sd.get("type", "SRV") == "A" for sd in worker), "every replica: DNS A records of `worker`"
    assert {n for sd in jobs["vllm"]["dns_sd_configs"] for n in sd["names"]} >= {*ROLES, "vllm-cpu"}


def test_grafana_dashboard_shows_the_exported_metrics():
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    assert dashboard["uid"] and dashboard["title"]
    datasource = yaml.safe_load((ROOT / "docker/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    shown = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == uid, panel["title"]
        for target in panel["targets"]:
            names = {metric_family(n) for n in METRIC_NAME.findall(target["expr"])}
            assert names, f"{panel['title']!r}: {target['expr']} names no metric"
            unknown = {n for n in names if not n.startswith("vllm:") and n not in UCAI_METRICS}
            assert not unknown, f"{panel['title']!r} queries metrics nobody exports: {unknown}"
            shown |= names
    assert DASHBOARD_MUST_SHOW <= shown, f"missing panels for {DASHBOARD_MUST_SHOW - shown}"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_exported_metric_names_are_the_dashboards():
    """The dashboard's names are the ones ucai/metrics.py registers (a rename there must show up here)."""
    source = (ROOT / "ucai" / "metrics.py").read_text()
    exported = set(re.findall(r'"(ucai_[a-z0-9_]+)"', source))
    assert UCAI_METRICS <= exported, f"not exported by ucai/metrics.py: {sorted(UCAI_METRICS - exported)}"
