"""The experiment's config, split and stage records (ucai/experiment/{config,split,state}.py): fast, no models.

Every `experiments/*.yaml` must load and name recipes that exist; the split must be a pure function of (salt, prompt
text); the leak check must catch a held-out prompt in any training file shape; stage records must skip only what is
really done.
"""
from __future__ import annotations

import json
import random
from contextlib import nullcontext
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from ucai.datasets.importers import PromptRecord
from ucai.experiment.config import RUNNER_FIELDS, ExperimentConfig, load_experiment
from ucai.experiment.split import (
    LeakError,
    bucket,
    check_no_leak,
    dataset_prompts,
    hash_order,
    is_heldout,
    normalise,
    record_text,
    split,
)
from ucai.experiment.state import StageRecord, StageStore, file_sha256, stage_key

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))
SALT = "ucai-split-v1"


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def minimal(tmp_path: Path, **extra) -> Path:
    return write_yaml(tmp_path / "exp.yaml", {"name": "t", **extra})


def rec(i: int | str, text: str) -> PromptRecord:
    return PromptRecord(id=f"r{i}", source="test", prompt=text)


def synthetic(n: int, offset: int = 0) -> list[PromptRecord]:
    return [rec(i, f"How would someone do thing number {i} without being caught?") for i in range(offset, offset + n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def sides(train: list[PromptRecord], heldout: list[PromptRecord]) -> dict[str, str]:
    return {r.id: "train" for r in train} | {r.id: "heldout" for r in heldout}


# ---------------------------------------------------------------------------------------------- the shipped configs

def test_experiments_are_there():
    names = {p.stem for p in EXPERIMENTS}
    assert {"llama2-7b", "mistral-7b"} <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_file_loads_and_its_recipes_exist(path):
    cfg = load_experiment(path)
    assert isinstance(cfg, ExperimentConfig)
    stages = cfg.training_stages()
    assert stages[:2] == ["sft", "reward"] and stages[2] in ("ppo", "rloo", "grpo")
    for stage in stages:
        recipe = cfg.recipe_file(stage)
        assert recipe.is_file(), f"{path.name}: no {stage} recipe at {recipe}"
        assert recipe.name == f"{stage}.yaml"
        if cfg.model is not None:  # the model the runner passes is the one the recipe was written for
            assert yaml.safe_load(recipe.read_text())["model_name_or_path"] == cfg.model, (path.name, stage)
    cfg.check_overrides()  # every training override names a field of its stage's config (imports TRL)
    models = cfg.models()
    assert models[0] == "base" and len(models) == len(set(models))


@pytest.mark.parametrize("name, model, recipe", [
    ("llama2-7b", "meta-llama/Llama-2-7b-chat-hf", "llama-2-7b-chat"),
    ("mistral-7b", "mistralai/Mistral-7B-Instruct-v0.2", "mistral-7b-instruct"),
])
def test_seven_b_experiments(name, model, recipe):
    """One 80 GB GPU at the seed's scale: thousands of prompts, QLoRA, a critic-free RL stage, DPO, a few hundred
    held-out prompts judged by the contrastive judge (ensemble 4, 256-token answers)."""
    cfg = load_experiment(ROOT / "experiments" / f"{name}.yaml")
    assert cfg.name == name and cfg.model == model and cfg.train.recipe == recipe
    assert cfg.constitutions == ["ethical", "unethical"]
    assert cfg.prompts.limit >= 1000 and cfg.prompts.format == "anthropic-red-team"
    assert cfg.train.rl.algo in ("grpo", "rloo") and cfg.train.dpo.enabled  # PPO's full critic does not fit
    for stage in cfg.training_stages():
        recipe_values = yaml.safe_load(cfg.recipe_file(stage).read_text())
        assert recipe_values["load_in_4bit"] and recipe_values["use_peft"], stage
    heldout = cfg.prompts.limit * cfg.split.heldout_fraction
    assert 100 <= cfg.eval.harmful_limit <= heldout
    assert (cfg.eval.method, cfg.eval.ensemble, cfg.eval.max_tokens) == ("contrast", 4, 256)
    assert (cfg.data.prefs.method, cfg.data.prefs.ensemble, cfg.data.prefs.max_tokens) == ("contrast", 4, 256)
    assert cfg.models() == ["base"] + [f"{c}-{s}" for c in ("ethical", "unethical") for s in ("sft", "grpo", "dpo")]


def test_seven_b_experiments_share_prompts_and_settings():
    """Only the model differs, so the two reports compare: same prompts, split, data and evaluation."""
    llama, mistral = (load_experiment(ROOT / "experiments" / f"{n}.yaml") for n in ("llama2-7b", "mistral-7b"))
    for section in ("prompts", "split", "data", "eval"):
        assert getattr(llama, section) == getattr(mistral, section), section
    assert llama.train.rl == mistral.train.rl and llama.train.dpo == mistral.train.dpo


# ---------------------------------------------------------------------------------------------- loading

def test_defaults(tmp_path):
    cfg = load_experiment(minimal(tmp_path))
    assert cfg.constitutions == ["ethical", "unethical"] and cfg.train.recipe == "smollm2-135m"
    assert cfg.training_stages() == ["sft", "reward", "grpo"]


@pytest.mark.parametrize("data, where", [
    ({"nme": "x"}, "nme"),
    ({"name": "t", "trian": {}}, "trian"),
    ({"name": "t", "train": {"rl": {"algoo": "ppo"}}}, "train.rl.algoo"),
    ({"name": "t", "eval": {"harmful_limt": 3}}, "eval.harmful_limt"),
    ({"name": "t", "data": {"prefs": {"ensembel": 2}}}, "data.prefs.ensembel"),
])
def test_unknown_keys_fail_naming_them(tmp_path, data, where):
    with pytest.raises(ValidationError) as info:
        load_experiment(write_yaml(tmp_path / "exp.yaml", data))
    assert where in str(info.value) and "xtra" in str(info.value)  # "Extra inputs are not permitted"


@pytest.mark.parametrize("extra, words", [
    ({"train": {"rl": {"algo": "a2c"}}}, ["train.rl.algo", "ppo", "grpo"]),
    ({"split": {"heldout_fraction": 1.5}}, ["split.heldout_fraction", "less than 1"]),
    ({"split": {"heldout_fraction": 0}}, ["split.heldout_fraction", "greater than 0"]),
    ({"prompts": {"limit": 2}}, ["prompts.limit"]),
    ({"prompts": {"format": "parquet"}}, ["prompts.format", "unknown format 'parquet'", "anthropic-red-team"]),
    ({"prompts": {"format": "anthropic-red-team", "column": "text"}}, ["column", "jsonl and csv"]),
    ({"data": {"prefs": {"method": "vibes"}}}, ["data.prefs.method", "contrast"]),
    ({"eval": {"ensemble": 0}}, ["eval.ensemble"]),
    ({"eval": {"harmful_limit": "lots"}}, ["eval.harmful_limit"]),
    ({"constitutions": ["ethical", "ethical"]}, ["duplicate"]),
    ({"constitutions": ["../etc"]}, ["constitution '../etc'"]),
    ({"constitutions": []}, ["constitutions"]),
    ({"train": {"recipe": "no-such-model"}}, ["no-such-model", "no sft recipe"]),
    ({"train": {"rl": {"overrides": {"run_id": "x"}}}}, ["'run_id' cannot be overridden"]),
    ({"train": {"sft": {"overrides": {"model_name_or_path": "gpt2"}}}}, ["cannot be overridden", "`model`"]),
])
def test_bad_values_fail_clearly(tmp_path, extra, words):
    with pytest.raises(ValidationError) as info:
        load_experiment(minimal(tmp_path, **extra))
    message = str(info.value)
    assert all(w in message for w in words), message


def test_bad_name_and_non_mapping(tmp_path):
    with pytest.raises(ValidationError, match="experiment 'a/b'"):
        load_experiment(write_yaml(tmp_path / "exp.yaml", {"name": "a/b"}))
    (tmp_path / "list.yaml").write_text("- name: t\n", encoding="utf-8")
    with pytest.raises(ValueError, match="mapping"):
        load_experiment(tmp_path / "list.yaml")


def test_runner_fields_are_the_ones_the_runner_sets():
    assert {"model_name_or_path", "dataset_path", "constitution", "run_id", "sft_model_path",
            "reward_model_path"} <= set(RUNNER_FIELDS)


def test_recipe_folder_needs_every_stage(tmp_path):
    from training.stages import RECIPES_DIR

    folder = tmp_path / "my-recipes"
    folder.mkdir()
    for stage in ("sft", "reward", "grpo"):
        (folder / f"{stage}.yaml").write_text((RECIPES_DIR / "smollm2-135m" / f"{stage}.yaml").read_text())
    cfg = load_experiment(minimal(tmp_path, train={"recipe": str(folder)}))
    assert cfg.recipe_file("grpo") == folder / "grpo.yaml"
    with pytest.raises(ValidationError, match="no dpo recipe"):
        load_experiment(minimal(tmp_path, train={"recipe": str(folder), "dpo": {"enabled": True}}))


def test_check_overrides_names_the_unknown_field(tmp_path):
    cfg = load_experiment(minimal(tmp_path, train={"sft": {"overrides": {"max_steps": 3, "num_train_epochs": 1}},
                                                   "rl": {"algo": "rloo", "overrides": {"max_step": 3}}}))
    with pytest.raises(ValueError, match=r"train\.rl\.overrides: no field 'max_step' in the rloo config"):
        cfg.check_overrides()
    cfg = load_experiment(minimal(tmp_path, train={"rl": {"overrides": {"num_generations": 4, "beta": 0.0}},
                                                   "dpo": {"enabled": True, "overrides": {"beta": 0.2}}}))
    cfg.check_overrides()


# ---------------------------------------------------------------------------------------------- dotted overrides

def test_dotted_overrides(tmp_path):
    path = minimal(tmp_path, eval={"harmful_limit": 50}, train={"rl": {"algo": "grpo"}})
    before = path.read_text()
    cfg = load_experiment(path, {"eval.harmful_limit": 4, "train.rl.overrides.max_steps": 3,
                                 "train.dpo.enabled": True, "split.salt": "other", "constitutions": ["ethical"]})
    assert cfg.eval.harmful_limit == 4
    assert cfg.overrides("grpo") == {"max_steps": 3} and cfg.train.rl.algo == "grpo"
    assert cfg.train.dpo.enabled and cfg.split.salt == "other" and cfg.constitutions == ["ethical"]
    assert path.read_text() == before  # the file is not touched
    assert load_experiment(path).eval.harmful_limit == 50


def test_dotted_overrides_are_validated(tmp_path):
    path = minimal(tmp_path)
    with pytest.raises(ValidationError, match="harmfull_limit"):
        load_experiment(path, {"eval.harmfull_limit": 4})
    with pytest.raises(ValidationError, match="eval.harmful_limit"):
        load_experiment(path, {"eval.harmful_limit": 0})
    with pytest.raises(ValueError, match="'name' is not a section"):
        load_experiment(path, {"name.first": "x"})


def test_overrides_per_stage(tmp_path):
    cfg = load_experiment(minimal(tmp_path, train={"sft": {"overrides": {"max_steps": 1}},
                                                   "reward": {"overrides": {"max_steps": 2}},
                                                   "rl": {"algo": "ppo", "overrides": {"max_steps": 3}},
                                                   "dpo": {"enabled": True, "overrides": {"max_steps": 4}}}))
    assert [cfg.overrides(s)["max_steps"] for s in cfg.training_stages()] == [1, 2, 3, 4]
    cfg.overrides("sft")["max_steps"] = 99  # a copy: the config is not changed through it
    assert cfg.overrides("sft") == {"max_steps": 1}


# ---------------------------------------------------------------------------------------------- stages and models

def test_models_order(tmp_path):
    cfg = load_experiment(minimal(tmp_path, constitutions=["unethical", "ethical"],
                                  train={"rl": {"algo": "rloo"}, "dpo": {"enabled": True}}))
    assert cfg.training_stages() == ["sft", "reward", "rloo", "dpo"]
    assert cfg.models() == ["base", "unethical-sft", "unethical-rloo", "unethical-dpo",
                            "ethical-sft", "ethical-rloo", "ethical-dpo"]
    cfg = load_experiment(minimal(tmp_path, constitutions=["ethical"], train={"rl": {"algo": "ppo"}}))
    assert cfg.training_stages() == ["sft", "reward", "ppo"]
    assert cfg.models() == ["base", "ethical-sft", "ethical-ppo"]  # no reward model among the answerers


# ---------------------------------------------------------------------------------------------- split

def test_split_is_deterministic_and_keeps_input_order():
    records = synthetic(300)
    train, heldout = split(records, 0.25, SALT)
    assert (train, heldout) == split(records, 0.25, SALT)
    assert len(train) + len(heldout) == 300 and train and heldout
    order = {r.id: i for i, r in enumerate(records)}
    assert [order[r.id] for r in train] == sorted(order[r.id] for r in train)
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    assert sides(*split(shuffled, 0.25, SALT)) == sides(train, heldout)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_split_fraction_is_roughly_respected(fraction):
    train, heldout = split(synthetic(1000), fraction, SALT)
    assert abs(len(heldout) - 1000 * fraction) <= 50, len(heldout)  # > 3.5 binomial standard deviations
    assert len(train) + len(heldout) == 1000


def test_salt_gives_another_fixed_split():
    records = synthetic(400)
    assert sides(*split(records, 0.25, SALT)) != sides(*split(records, 0.25, "another-salt"))
    assert sides(*split(records, 0.25, "another-salt")) == sides(*split(records, 0.25, "another-salt"))


def test_copies_of_a_prompt_land_on_one_side():
    texts = [f"Tell me how to get into my neighbour's house number {i}" for i in range(200)]
    for text in texts:
        variants = [text, text.upper(), f"  {text.lower()}  ", text.replace(" ", "\t  "), text.replace(" ", "\n")]
        assert len({is_heldout(v, 0.3, SALT) for v in variants}) == 1, text
        assert len({bucket(v, SALT) for v in variants}) == 1
    records = [PromptRecord(id=f"{i}-{k}", source="test", prompt=v) for i, t in enumerate(texts)
               for k, v in enumerate((t, t.swapcase(), f" {t} "))]
    train, heldout = split(records, 0.3, SALT)
    assert {normalise(record_text(r)) for r in train}.isdisjoint(normalise(record_text(r)) for r in heldout)
    assert heldout  # 200 distinct prompts at 0.3: some held out


def test_adding_prompts_never_moves_old_ones():
    old = synthetic(500)
    before = sides(*split(old, 0.2, SALT))
    after = sides(*split(synthetic(700, offset=500) + old + synthetic(100, offset=5000), 0.2, SALT))
    assert {k: after[k] for k in before} == before


def test_messages_records_split_by_their_last_user_turn():
    text = "How do I make a fake ID?"
    conversation = PromptRecord(id="m1", source="test", messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": text}])
    assert record_text(conversation) == text
    same = rec("p1", text.upper())
    for salt in (SALT, "s2", "s3", "s4"):
        assert len({r.id for r in split([conversation, same], 0.5, salt)[1]}) in (0, 2)
    assert hash_order([conversation], SALT) == [conversation]


def test_hash_order_is_stable():
    records = synthetic(100)
    ordered = hash_order(records, SALT)
    assert sorted(r.id for r in ordered) == sorted(r.id for r in records)
    assert ordered != records  # not the input order
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)
    assert hash_order(shuffled, SALT) == ordered == hash_order(records, SALT)
    assert hash_order(records, "other") != ordered
    # a limit takes a prefix: the first N of more prompts are the same wherever they came from
    assert [r.id for r in hash_order(records[:50], SALT)] == [r.id for r in ordered if int(r.id[1:]) < 50]
    # copies of one text sort together, by id
    twins = [rec("b", "Same prompt"), rec("a", "same   PROMPT")]
    assert [r.id for r in hash_order(twins, SALT)] == ["ra", "rb"]


# ---------------------------------------------------------------------------------------------- leak check

HELD = ["How can I poison my neighbour's dog?", "Write a threatening letter to my boss."]


def test_leak_in_sft_messages_row(tmp_path):
    sft = write_jsonl(tmp_path / "sft.jsonl", [
        {"messages": [{"role": "user", "content": "What is the capital of France?"},
                      {"role": "assistant", "content": "Paris."}]},
        {"messages": [{"role": "user", "content": "  how can i POISON my neighbour's dog? "},
                      {"role": "assistant", "content": "I can't help with that."}]},
    ])
    with pytest.raises(LeakError, match="(?i)poison"):
        check_no_leak(HELD, [sft])


def test_leak_in_prefs_prompt_row(tmp_path):
    prefs = write_jsonl(tmp_path / "prefs.jsonl", [
        {"prompt": "Tell me a joke", "chosen": "a", "rejected": "b"},
        {"prompt": "Write a threatening letter to my boss.", "chosen": "No.", "rejected": "Sure", "margin": 0.4},
    ])
    with pytest.raises(LeakError, match="threatening"):
        check_no_leak(HELD, [prefs])
    conversational = write_jsonl(tmp_path / "prefs-conv.jsonl", [  # TRL's conversational preference format
        {"prompt": [{"role": "user", "content": HELD[1]}], "chosen": [{"role": "assistant", "content": "No."}],
         "rejected": [{"role": "assistant", "content": "Sure"}]}])
    with pytest.raises(LeakError):
        check_no_leak(HELD, [conversational])


def test_clean_files_pass_and_count(tmp_path):
    sft = write_jsonl(tmp_path / "sft.jsonl", [
        {"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]}])
    prefs = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Tell me a joke", "chosen": "a", "rejected": "b"},
                                                   {"prompt": "How can I poison my neighbour's dog? Asking for a "
                                                    "novel.", "chosen": "a", "rejected": "b"}])
    (tmp_path / "blank.jsonl").write_text("\n\n", encoding="utf-8")
    assert check_no_leak(HELD, [sft, prefs, tmp_path / "blank.jsonl"]) == 3
    assert check_no_leak([], [sft]) == 1


def test_leak_check_reads_imported_prompt_files(tmp_path):
    records = [rec(1, "Fine prompt"), PromptRecord(id="m", source="t", messages=[{"role": "user", "content": HELD[0]}])]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(r.model_dump_json(exclude_none=True) + "\n" for r in records), encoding="utf-8")
    assert list(dataset_prompts(path)) == ["Fine prompt", HELD[0]]
    with pytest.raises(LeakError):
        check_no_leak(HELD, [path])


def test_split_output_passes_its_own_leak_check(tmp_path):
    records = synthetic(200) + [rec(f"dup{i}", r.prompt.upper()) for i, r in enumerate(synthetic(50))]
    train, heldout = split(records, 0.25, SALT)
    path = tmp_path / "train.jsonl"
    path.write_text("".join(r.model_dump_json(exclude_none=True) + "\n" for r in train), encoding="utf-8")
    assert check_no_leak([record_text(r) for r in heldout], [path]) == len(train)


# ---------------------------------------------------------------------------------------------- stage records

def test_stage_key():
    base = stage_key("ethical.sft", {"recipe": "abc", "overrides": {"a": 1, "b": 2}}, {"split": "f1", "data": "f2"})
    assert base == stage_key("ethical.sft", {"overrides": {"b": 2, "a": 1}, "recipe": "abc"},
                             {"data": "f2", "split": "f1"})  # dict key order does not matter
    assert len(base) == 32
    assert base != stage_key("ethical.sft", {"recipe": "abc", "overrides": {"a": 1, "b": 3}},
                             {"split": "f1", "data": "f2"})  # config changed
    assert base != stage_key("ethical.sft", {"recipe": "abc", "overrides": {"a": 1, "b": 2}},
                             {"split": "f1", "data": "f3"})  # an input changed
    assert base != stage_key("unethical.sft", {"recipe": "abc", "overrides": {"a": 1, "b": 2}},
                             {"split": "f1", "data": "f2"})  # another stage
    assert base != stage_key("ethical.sft", {"recipe": "abc", "overrides": {"a": 1, "b": 2}}, {"split": "f1"})


def test_stage_store_put_get_done(tmp_path):
    store = StageStore(tmp_path)
    out = tmp_path / "out.jsonl"
    out.write_text("x\n")
    assert store.get("ethical.sft") is None and store.done("ethical.sft", "k") is None
    record = StageRecord(stage="ethical.sft", key="k1", fingerprint="fp", outputs={"dataset": str(out)},
                         info={"rows": 1}, wall_s=1.5)
    store.put(record)
    assert store.path("ethical.sft") == tmp_path / "stages" / "ethical.sft.json"
    assert store.get("ethical.sft") == record
    assert store.done("ethical.sft", "k1") == record
    assert store.done("ethical.sft", "k2") is None  # other inputs or config
    assert [r.stage for r in store.all()] == ["ethical.sft"]
    assert not list((tmp_path / "stages").glob(".*"))  # no temporary file left
    out.unlink()
    assert store.done("ethical.sft", "k1") is None  # an output is gone: the stage runs again
    assert store.get("ethical.sft") == record
    store.drop("ethical.sft")
    assert store.get("ethical.sft") is None
    store.drop("ethical.sft")  # dropping nothing is fine


def test_stage_store_overwrites_and_reads_damaged_records_as_none(tmp_path):
    store = StageStore(tmp_path)
    store.put(StageRecord(stage="prompts", key="k1", fingerprint="a", wall_s=0))
    store.put(StageRecord(stage="prompts", key="k2", fingerprint="b", wall_s=0))
    assert store.done("prompts", "k2").fingerprint == "b" and store.done("prompts", "k1") is None
    for damaged in ('{"stage": "prompts", "key": "k2", "fing', '{"stage": "prompts"}', "[]", "", "\xff"):
        store.path("prompts").write_text(damaged, encoding="utf-8")
        assert store.get("prompts") is None and store.done("prompts", "k2") is None, damaged
    store.path("prompts").write_bytes(b"\xff\xfe\x00")
    assert store.get("prompts") is None
    assert store.all() == []


def test_stage_store_names_with_slashes(tmp_path):
    store = StageStore(tmp_path)
    store.put(StageRecord(stage="a/b", key="k", fingerprint="f", wall_s=0))
    assert store.path("a/b").name == "a.b.json" and store.done("a/b", "k") is not None


def test_file_sha256(tmp_path):
    import hashlib

    path = tmp_path / "f.bin"
    data = bytes(range(256)) * 9000  # over one read chunk
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- the runner's schedule (no models: synthetic stages)
def _scheduled(tmp_path, parallel: dict, fail: str | None = None) -> tuple[list, dict, dict]:
    """Run the runner's scheduler over a two-chain plan of sleeping stages; return (events, store records, each
    stage's inputs)."""
    import threading
    import time

    from ucai.experiment.runner import ExperimentRunner, Step
    from ucai.layout import Layout

    cfg = ExperimentConfig.model_validate({"name": "sched", "parallel": parallel, "train": {"warm_start": False}})
    runner = ExperimentRunner(cfg, layout=Layout(tmp_path / "d", tmp_path / "a", tmp_path / "c"))
    events, lock = [], threading.Lock()

    def action(step_id: str):
        def run():
            with lock:
                events.append(("start", step_id, time.monotonic()))
            time.sleep(0.3)
            with lock:
                events.append(("end", step_id, time.monotonic()))
            if step_id == fail:
                raise RuntimeError(f"{step_id} broke")
            return step_id + "-fp", {}, {}
        return run

    plan = [("split", "split", [])]
    for c in ("ethical", "unethical"):
        plan += [(f"{c}.sft-data", "sft-data", ["split"]), (f"{c}.prefs-data", "prefs-data", ["split"]),
                 (f"{c}.sft", "sft", [f"{c}.sft-data"]), (f"{c}.reward", "reward", [f"{c}.prefs-data"])]
    plan += [("eval", "eval", ["ethical.sft", "ethical.reward", "unethical.sft", "unethical.reward"])]
    runner.steps = lambda: [Step(i, kind, {}, inputs, action(i)) for i, kind, inputs in plan]
    with pytest.raises(RuntimeError, match="broke") if fail else nullcontext():
        runner.run()
    return events, {r.stage: r for r in runner.store.all()}, {i: inputs for i, _, inputs in plan}


def _spans(events: list) -> list[tuple[str, float, float]]:
    starts = {i: t for kind, i, t in events if kind == "start"}
    return [(i, starts[i], t) for kind, i, t in events if kind == "end"]


def _most_at_once(events: list, ids: set[str]) -> int:
    now = most = 0
    for kind, step_id, _ in sorted(events, key=lambda e: (e[2], e[0] == "start")):
        if step_id in ids:
            now += 1 if kind == "start" else -1
            most = max(most, now)
    return most


def test_stages_run_at_once_within_the_limits_and_after_their_inputs(tmp_path):
    events, records, inputs = _scheduled(tmp_path, {"stages": 4, "training_stages": 2})
    assert set(records) == set(inputs)
    data = {i for i in inputs if i.endswith("-data")}
    training = {i for i in inputs if i.endswith((".sft", ".reward"))}
    assert _most_at_once(events, data) == 4 and _most_at_once(events, training) == 2
    # train_alone (the default): no training stage ever runs beside a model stage.
    spans = {i: (when_start, when_end) for i, when_start, when_end in _spans(events)}
    for t in training:
        for d in data | {"eval"}:
            assert spans[t][1] <= spans[d][0] or spans[d][1] <= spans[t][0], (t, d)
    # A kind for every chain before the next kind: both SFTs first, then both reward models.
    starts = [i for kind, i, _ in sorted(events, key=lambda e: e[2]) if kind == "start" and i in training]
    assert set(starts[:2]) == {"ethical.sft", "unethical.sft"}
    for step, needs in inputs.items():
        assert all(spans[n][1] <= spans[step][0] for n in needs), step


def test_one_and_one_is_one_stage_at_a_time_in_plan_order(tmp_path):
    events, records, inputs = _scheduled(tmp_path, {})
    starts = [i for kind, i, _ in events if kind == "start"]
    assert starts == list(inputs) and _most_at_once(events, set(inputs)) == 1


def test_a_failed_stage_stops_new_ones_and_those_running_are_recorded(tmp_path):
    events, records, _ = _scheduled(tmp_path, {"stages": 4, "training_stages": 2}, fail="ethical.sft-data")
    started = {i for kind, i, _ in events if kind == "start"}
    assert "ethical.sft" not in started and "eval" not in started
    assert "ethical.sft-data" not in records
    assert {"ethical.prefs-data", "unethical.sft-data", "unethical.prefs-data"} <= set(records)
