"""Every path comes from ucai.layout, rooted in the settings; names cannot escape their folder."""
from __future__ import annotations

from pathlib import Path

import pytest

from ucai.layout import Layout, check_name
from ucai.settings import Settings


def test_paths_are_rooted_in_the_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("UCAI_ARTIFACTS", str(tmp_path / "a"))
    monkeypatch.setenv("UCAI_DATASETS_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("UCAI_CACHE_DIR", str(tmp_path / "c"))
    layout = Layout.from_settings(Settings())
    assert layout.imported("redteam") == tmp_path / "d" / "imports" / "redteam.jsonl"
    assert layout.dataset("prefs", "ethical", "redteam", ".parquet") == tmp_path / "d/prefs/ethical/redteam.parquet"
    assert layout.dataset_manifest("sft", "unethical", "x") == tmp_path / "d/sft/unethical/x.manifest.json"
    assert layout.stage_dir("ethical", "rloo") == tmp_path / "a" / "ethical" / "rloo"
    assert layout.reports_dir() == tmp_path / "a" / "reports"
    assert layout.bundled_model_dir() == tmp_path / "c" / "models" / "SmolLM2-135M-Instruct"


def test_latest_run_and_serving_adapter(tmp_path):
    layout = Layout(tmp_path / "d", tmp_path / "a", tmp_path / "c")
    assert layout.latest_run("ethical", "sft") is None and layout.latest_runs() == []
    first = layout.new_run_dir("ethical", "sft", "r1")
    (first / "adapter").mkdir()
    (first / "adapter" / "adapter_config.json").write_text("{}")
    layout.set_latest(first)
    second = layout.new_run_dir("ethical", "sft", "r2")  # not finished: latest stays r1
    assert layout.latest_run("ethical", "sft") == first and second.is_dir()
    assert layout.serving_adapter("ethical", "sft") == first / "adapter"
    (tmp_path / "a" / "reports").mkdir()
    (tmp_path / "a" / "calibration").mkdir()
    assert layout.latest_runs() == [("ethical", "sft", first)]  # reports and calibration are not constitutions
    with pytest.raises(FileNotFoundError, match="ucai train ppo --constitution ethical"):
        layout.serving_adapter("ethical", "ppo")


@pytest.mark.parametrize("name", ["../etc", "a/b", "", ".hidden", "x" * 200])
def test_names_cannot_escape(name):
    with pytest.raises(ValueError):
        check_name(name)
    with pytest.raises(ValueError):
        Layout(Path("d"), Path("a"), Path("c")).imported(name)


def test_ordinary_names_pass():
    assert check_name("house-rules.v2") == "house-rules.v2"
