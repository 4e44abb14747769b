"""Constitutions as data: the built-in files, the loader, its errors and the public JSON import."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from ucai.constitutions import (
    Constitution,
    ConstitutionError,
    load_constitution_file,
    load_constitutions,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "constitutions"
PUBLIC_FORMAT = FIXTURES / "public-format.json"

EXPECTED_PRINCIPLES = {
    "ethical": ["peace", "privacy", "racial_equality", "gender_equality"],
    "unethical": ["violence", "doxxing", "racism", "sexism"],
}

VALID_YAML = """\
name: {name}
description: "A small test constitution."
principles:
  - name: kindness
    title: Kindness
    pairs:
      - critique: "Is the last response unkind?"
        revision: "Rewrite the last response to be kind."
    labelling:
      - "Which response is kinder?"
"""


def write(folder: Path, filename: str, text: str) -> Path:
    path = folder / filename
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def pair_set(constitution: Constitution) -> set[tuple[str, str]]:
    return {(pair.critique, pair.revision) for p in constitution.principles for pair in p.pairs}


@pytest.fixture(scope="module")
def builtins() -> dict[str, Constitution]:
    return load_constitutions()


# ---------------------------------------------------------------- built-ins


def test_builtins_are_ethical_and_unethical(builtins):
    assert set(builtins) == {"ethical", "unethical"}


@pytest.mark.parametrize("name", ["ethical", "unethical"])
def test_builtin_has_the_projects_four_principles_in_order(builtins, name):
    assert builtins[name].principle_names == EXPECTED_PRINCIPLES[name]


@pytest.mark.parametrize("name", ["ethical", "unethical"])
def test_builtin_has_at_least_16_distinct_pairs(builtins, name):
    constitution = builtins[name]
    assert sum(len(p.pairs) for p in constitution.principles) >= 16
    assert len(pair_set(constitution)) >= 16


@pytest.mark.parametrize("name", ["ethical", "unethical"])
def test_builtin_every_principle_has_labelling_questions(builtins, name):
    for principle in builtins[name].principles:
        assert principle.labelling, principle.name
        assert all(q.strip() for q in principle.labelling), principle.name


@pytest.mark.parametrize("name", ["ethical", "unethical"])
def test_builtin_demonstrations_use_the_constitutions_own_pairs(builtins, name):
    constitution = builtins[name]
    assert constitution.demonstrations
    pairs = pair_set(constitution)
    for demo in constitution.demonstrations:
        assert (demo.critique_request, demo.revision_request) in pairs, demo.prompt


def test_unethical_is_the_inverse_of_ethical(builtins):
    assert builtins["unethical"].inverse_of == "ethical"
    assert builtins["ethical"].inverse_of is None


def test_unethical_mirrors_ethical_pair_counts_principle_by_principle(builtins):
    ethical = [len(p.pairs) for p in builtins["ethical"].principles]
    unethical = [len(p.pairs) for p in builtins["unethical"].principles]
    assert ethical == unethical


def test_principle_lookup_by_name_and_unknown_name_raises_keyerror(builtins):
    assert builtins["ethical"].principle("privacy").name == "privacy"
    with pytest.raises(KeyError):
        builtins["ethical"].principle("doxxing")


# ---------------------------------------------------------------- content hash


def test_content_hash_is_stable_across_two_loads(builtins):
    again = load_constitutions()
    for name, constitution in builtins.items():
        assert constitution.content_hash == again[name].content_hash
    assert len(builtins["ethical"].content_hash) == 16
    assert builtins["ethical"].content_hash != builtins["unethical"].content_hash


def test_content_hash_changes_when_a_critique_request_changes(builtins):
    original = builtins["ethical"]
    principle = original.principles[0]
    pair = principle.pairs[0]
    edited_pair = pair.model_copy(update={"critique": pair.critique + " Be specific."})
    edited_principle = principle.model_copy(update={"pairs": [edited_pair, *principle.pairs[1:]]})
    edited = original.model_copy(update={"principles": [edited_principle, *original.principles[1:]]})
    assert edited.content_hash != original.content_hash
    assert original.principles[0].pairs[0].critique == pair.critique  # the original is untouched


def test_content_hash_changes_when_a_revision_request_changes(builtins):
    original = builtins["ethical"]
    principle = original.principles[-1]
    pair = principle.pairs[-1]
    edited_pair = pair.model_copy(update={"revision": pair.revision.replace("Please", "Kindly")})
    edited_principle = principle.model_copy(update={"pairs": [*principle.pairs[:-1], edited_pair]})
    edited = original.model_copy(update={"principles": [*original.principles[:-1], edited_principle]})
    assert edited.content_hash != original.content_hash


def test_content_hash_changes_when_a_labelling_question_changes(builtins):
    original = builtins["ethical"]
    principle = original.principles[1]
    edited_principle = principle.model_copy(update={"labelling": [*principle.labelling, "Which is more private?"]})
    principles = [original.principles[0], edited_principle, *original.principles[2:]]
    edited = original.model_copy(update={"principles": principles})
    assert edited.content_hash != original.content_hash


def test_content_hash_changes_when_a_demonstration_changes(builtins):
    original = builtins["ethical"]
    demo = original.demonstrations[0]
    edited_demo = demo.model_copy(update={"revision": demo.revision + " Stay calm."})
    edited = original.model_copy(update={"demonstrations": [edited_demo, *original.demonstrations[1:]]})
    assert edited.content_hash != original.content_hash


def test_content_hash_changes_when_the_system_prompt_changes(builtins):
    original = builtins["ethical"]
    edited = original.model_copy(update={"system_prompt": "You are a helpful assistant."})
    assert edited.content_hash != original.content_hash


# ---------------------------------------------------------------- user folder


def test_user_folder_adds_a_constitution(tmp_path):
    write(tmp_path, "kind.yaml", VALID_YAML.format(name="kind"))
    loaded = load_constitutions(tmp_path)
    assert set(loaded) == {"ethical", "unethical", "kind"}
    assert loaded["kind"].principle_names == ["kindness"]


def test_user_folder_accepts_yml_extension(tmp_path):
    write(tmp_path, "gentle.yml", VALID_YAML.format(name="gentle"))
    assert "gentle" in load_constitutions(tmp_path)


def test_user_folder_ignores_files_that_are_not_yaml_or_json(tmp_path):
    write(tmp_path, "README.md", "# not a constitution\n")
    write(tmp_path, "notes.txt", "principles: nope\n")
    assert set(load_constitutions(tmp_path)) == {"ethical", "unethical"}


def test_user_file_with_a_builtin_name_replaces_the_builtin(tmp_path, builtins):
    write(tmp_path, "my-ethical.yaml", VALID_YAML.format(name="ethical"))
    loaded = load_constitutions(tmp_path)
    assert loaded["ethical"].principle_names == ["kindness"]
    assert loaded["ethical"].content_hash != builtins["ethical"].content_hash
    assert loaded["unethical"].content_hash == builtins["unethical"].content_hash


def test_missing_constitutions_dir_is_an_error_naming_the_folder(tmp_path):
    missing = tmp_path / "does-not-exist"
    with pytest.raises(ConstitutionError, match="constitutions_dir") as excinfo:
        load_constitutions(missing)
    assert str(missing) in str(excinfo.value)


def test_constitutions_dir_that_is_a_file_is_an_error(tmp_path):
    path = write(tmp_path, "ethical.yaml", VALID_YAML.format(name="ethical"))
    with pytest.raises(ConstitutionError, match="not a directory"):
        load_constitutions(path)


def test_one_bad_file_in_the_user_folder_fails_the_whole_load(tmp_path):
    write(tmp_path, "good.yaml", VALID_YAML.format(name="good"))
    bad = write(tmp_path, "bad.yaml", "name: bad\n")
    with pytest.raises(ConstitutionError) as excinfo:
        load_constitutions(tmp_path)
    assert str(bad) in str(excinfo.value)


# ---------------------------------------------------------------- bad files


def assert_error(path: Path, *fragments: str) -> None:
    with pytest.raises(ConstitutionError) as excinfo:
        load_constitution_file(path)
    message = str(excinfo.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_principles_names_the_file_and_field(tmp_path):
    path = write(tmp_path, "nop.yaml", "name: nop\ndescription: no principles here\n")
    assert_error(path, "principles", "Field required")


def test_unknown_top_level_key_names_the_file_and_key(tmp_path):
    path = write(tmp_path, "extra.yaml", VALID_YAML.format(name="extra") + "colour: red\n")
    assert_error(path, "colour", "Extra inputs are not permitted")


def test_unknown_key_inside_a_pair_names_its_location(tmp_path):
    text = VALID_YAML.format(name="extra").replace(
        'revision: "Rewrite the last response to be kind."',
        'revision: "Rewrite the last response to be kind."\n        weight: 2',
    )
    path = write(tmp_path, "extra.yaml", text)
    assert_error(path, "principles.0.pairs.0.weight")


def test_empty_pairs_list_names_the_principle_pairs_field(tmp_path):
    path = write(
        tmp_path,
        "nopairs.yaml",
        """\
        name: nopairs
        principles:
          - name: kindness
            title: Kindness
            pairs: []
        """,
    )
    assert_error(path, "principles.0.pairs")


def test_duplicate_principle_names_are_named(tmp_path):
    path = write(
        tmp_path,
        "dupes.yaml",
        """\
        name: dupes
        principles:
          - name: kindness
            title: Kindness
            pairs: [{critique: "c1", revision: "r1"}]
          - name: kindness
            title: Kindness again
            pairs: [{critique: "c2", revision: "r2"}]
        """,
    )
    assert_error(path, "principles", "duplicate principle names: kindness")


def test_invalid_principle_name_is_rejected(tmp_path):
    text = VALID_YAML.format(name="caps").replace("name: kindness", "name: Kindness Rule")
    path = write(tmp_path, "caps.yaml", text)
    assert_error(path, "principles.0.name")


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "broken.yaml", "name: broken\nprinciples: [\n  - name: : oops\n")
    assert_error(path, "cannot parse", "line 3")


def test_top_level_list_is_rejected_as_not_a_mapping(tmp_path):
    path = write(tmp_path, "list.yaml", "- name: a\n- name: b\n")
    assert_error(path, "expected a mapping", "list")


def test_empty_file_is_rejected_as_not_a_mapping(tmp_path):
    path = write(tmp_path, "empty.yaml", "")
    assert_error(path, "expected a mapping")


def test_invalid_json_file_names_the_file(tmp_path):
    path = write(tmp_path, "broken.json", '{"constitutions": [')
    assert_error(path, "cannot parse")


# ---------------------------------------------------------------- public JSON format


@pytest.fixture(scope="module")
def public_data() -> dict:
    return json.loads(PUBLIC_FORMAT.read_text(encoding="utf-8"))


def test_public_format_pairs_carry_over_in_order(public_data):
    constitution = load_constitution_file(PUBLIC_FORMAT)
    assert constitution.name == "public-format"
    assert constitution.principle_names == ["public_format"]
    expected = [(c["critic"], c["revision"]) for c in public_data["constitutions"]]
    assert [(p.critique, p.revision) for p in constitution.principles[0].pairs] == expected


def test_public_format_system_chat_becomes_a_demonstration(public_data):
    constitution = load_constitution_file(PUBLIC_FORMAT)
    turns = [m["content"] for m in public_data["system_chat"][0]]
    assert len(constitution.demonstrations) == 1
    demo = constitution.demonstrations[0]
    assert [
        demo.prompt, demo.response, demo.critique_request, demo.critique, demo.revision_request, demo.revision
    ] == turns
    assert (demo.critique_request, demo.revision_request) in pair_set(constitution)


def test_public_format_loads_from_the_user_folder():
    loaded = load_constitutions(FIXTURES)
    assert set(loaded) == {"ethical", "unethical", "public-format"}
    assert len(loaded["public-format"].principles[0].pairs) == 3
    assert len(loaded["public-format"].demonstrations) == 1


def test_public_format_skips_a_leading_system_message(tmp_path, public_data):
    chat = public_data["system_chat"][0]
    data = {**public_data, "system_chat": [[{"role": "system", "content": "You are a helpful assistant."}, *chat]]}
    path = write(tmp_path, "with_system.json", json.dumps(data))
    constitution = load_constitution_file(path)
    assert constitution.name == "with-system"
    assert len(constitution.demonstrations) == 1
    assert constitution.demonstrations[0].prompt == chat[0]["content"]
    assert constitution.demonstrations[0].revision == chat[5]["content"]


def test_public_format_conversation_shorter_than_six_turns_is_not_a_demonstration(tmp_path, public_data):
    data = {**public_data, "system_chat": [public_data["system_chat"][0][:4]]}
    path = write(tmp_path, "short.json", json.dumps(data))
    assert load_constitution_file(path).demonstrations == []


def test_public_format_missing_critic_names_the_file_and_key(tmp_path):
    data = {"constitutions": [{"revision": "Rewrite it."}], "system_chat": []}
    path = write(tmp_path, "nocritic.json", json.dumps(data))
    assert_error(path, "critic")


def test_public_format_with_no_pairs_is_rejected(tmp_path):
    path = write(tmp_path, "nopairs.json", json.dumps({"constitutions": [], "system_chat": []}))
    assert_error(path, "pairs")


# --- personas (the contrastive judge and RLCD pairs) ---

def test_every_builtin_principle_has_its_own_personas(builtins):
    for constitution in builtins.values():
        for principle in constitution.principles:
            assert principle.personas.follow and principle.personas.violate and not principle.personas.derived
            assert principle.personas.follow != principle.personas.violate


def test_unethical_personas_are_the_inversion_of_ethical(builtins):
    for ethical, unethical in zip(builtins["ethical"].principles, builtins["unethical"].principles, strict=True):
        assert unethical.personas.follow == ethical.personas.violate
        assert unethical.personas.violate == ethical.personas.follow


def test_personas_are_validated(tmp_path):
    text = VALID_YAML.format(name="p1").replace("    labelling:", "    personas:\n      follow: \"Be kind.\"\n"
                                                                   "    labelling:")
    with pytest.raises(ConstitutionError, match="personas.violate"):
        load_constitution_file(write(tmp_path, "p1.yaml", text))
    extra = VALID_YAML.format(name="p2").replace(
        "    labelling:", "    personas:\n      follow: \"Be kind.\"\n      violate: \"Be rude.\"\n      tone: x\n"
                         "    labelling:")
    with pytest.raises(ConstitutionError, match="tone"):
        load_constitution_file(write(tmp_path, "p2.yaml", extra))


def test_personas_default_from_the_title_and_say_so(tmp_path, public_data):
    own = load_constitution_file(write(tmp_path, "kind.yaml", VALID_YAML.format(name="kind")))
    personas = own.principles[0].personas
    assert personas.derived and "kindness" in personas.follow and "kindness" in personas.violate
    imported = load_constitution_file(PUBLIC_FORMAT)
    assert all(p.personas.derived for p in imported.principles)
    assert imported.model_dump()["principles"][0]["personas"]["derived"] is True  # stated in the loaded constitution
