"""The package's speculative settings (written by the build, read by the runtime), command-line
overrides, and the seam that loads a drafter for them."""

from __future__ import annotations

import json

import pytest

from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.package.chat_config import RUNTIME_CONFIG
from pipeline.runtime.drafters import (
    DRAFTER_FAMILIES,
    draft_length_policy,
    drafter_files,
    load_drafter,
    package_speculative,
)
from pipeline.runtime.engine import Engine
from tests.helpers.packages import build_package
from tests.helpers.stand_ins import SelfDrafter


def runtime_config(package):
    return json.loads((package / RUNTIME_CONFIG).read_text())


def test_the_build_writes_the_speculative_section_to_the_runtime_config_only(tiny_package):
    package = tiny_package[0]
    expected = {"mode": "off", "draft_length": 3, "adaptive": True, "min_draft_length": 1, "max_draft_length": 8,
                "drafter_lib": None, "drafter_weights": None}
    written = runtime_config(package)["speculative"]
    assert {key: written.get(key, "absent") for key in expected} == expected
    chat = (package / "mlc-chat-config.json").read_text()
    assert "speculative" not in chat and "draft_length" not in chat  # mlc-llm's file keeps mlc-llm's keys


def test_the_configs_speculative_settings_reach_the_package(tiny_package, tmp_path):
    hf = tiny_package[0].parent / "hf"  # the fixture's source: its stages are cached
    package = build_package(tmp_path, hf, speculative={"draft_length": 5, "adaptive": False})
    settings = package_speculative(package, runtime_config(package), {"mode": "mtp"})
    assert (settings["mode"], settings["draft_length"], settings["adaptive"]) == ("mtp", 5, False)
    policy = draft_length_policy(settings)
    assert (policy.current, policy.adaptive) == (5, False)


def test_overrides_replace_the_package_settings_and_none_keeps_them(tiny_package):
    package = tiny_package[0]
    settings = package_speculative(package, runtime_config(package),
                                   {"mode": "mtp", "draft_length": 6, "adaptive": None})
    assert (settings["mode"], settings["draft_length"], settings["adaptive"]) == ("mtp", 6, True)
    assert package_speculative(package, {}, None)["mode"] == "off"  # a package from before the section


@pytest.mark.parametrize("overrides,needles", [
    ({"draft_length": 4}, ["with draft_length=4", "speculative.mode: 'off', expected 'mtp'"]),
    ({"mode": "mtp", "draft_length": 12}, ["mode=mtp, draft_length=12", "speculative.draft_length: 12",
                                           "[min_draft_length 1, max_draft_length 8] when adaptive"]),
    ({"mode": "mtp", "draft_length": 0}, ["speculative.draft_length: 0 is less than the minimum of 1"]),
    ({"mode": "medusa"}, ["speculative.mode: 'medusa' is not one of ['off', 'mtp']"]),
])
def test_bad_overrides_name_the_file_the_key_and_the_expectation(tiny_package, overrides, needles):
    package = tiny_package[0]
    with pytest.raises(PipelineError) as err:
        package_speculative(package, runtime_config(package), overrides)
    assert str(err.value).startswith(f"{package / RUNTIME_CONFIG} with ")
    for needle in needles:
        assert needle in str(err.value), str(err.value)


def test_a_hand_edited_runtime_config_is_checked(tiny_package):
    with pytest.raises(PipelineError, match=r"speculative\.drafter_weights: 3 is not of type 'string', 'null'"):
        package_speculative(tiny_package[0], {"speculative": {"drafter_weights": 3}})


def test_no_drafter_when_speculation_is_off(tiny_package):
    engine = Engine(tiny_package[0])
    assert load_drafter(engine, package_speculative(engine.package, engine.runtime_config)) is None


def test_mtp_on_a_package_without_a_drafter_says_what_is_missing(tiny_package):
    engine = Engine(tiny_package[0])
    with pytest.raises(PipelineError) as err:
        load_drafter(engine, package_speculative(engine.package, engine.runtime_config, {"mode": "mtp"}))
    assert str(err.value) == (f"{engine.package}: speculative mode 'mtp' needs a drafter, but {RUNTIME_CONFIG} has "
                              f"no speculative.drafter_lib for target 'cpu' (the package holds no drafter)")


def test_drafter_files_must_exist(drafter_package, tmp_path):
    settings = package_speculative(drafter_package, runtime_config(drafter_package), {"mode": "mtp"})
    assert drafter_files(drafter_package, settings) == (drafter_package / "lib" / "drafter-cpu.so",
                                                        drafter_package / "drafter")
    with pytest.raises(PipelineError, match=r"nowhere/drafter: drafter weights named in .* not found"):
        drafter_files(drafter_package, {**settings, "drafter_weights": "nowhere/drafter"})


def test_the_seam_hands_over_the_familys_class(drafter_package, stand_in_mtp):
    engine = Engine(drafter_package)
    drafter = load_drafter(engine, package_speculative(engine.package, engine.runtime_config, {"mode": "mtp"}))
    assert isinstance(drafter, SelfDrafter) and drafter.offset == stand_in_mtp.offset == 0


@pytest.mark.parametrize("family,shown", [(None, "null"), ("eagle", "'eagle'")])
def test_a_missing_or_unknown_drafter_family_is_one_line(drafter_package, family, shown):
    """No default family: speculation on with no or an unknown ``drafter_family`` names the file,
    the key, the value and the families this runtime drives."""
    engine = Engine(drafter_package)
    settings = package_speculative(engine.package, engine.runtime_config, {"mode": "mtp"})
    with pytest.raises(PipelineError) as err:
        load_drafter(engine, {**settings, "drafter_family": family})
    assert str(err.value) == (f"{drafter_package / RUNTIME_CONFIG}: speculative.drafter_family: {shown}, "
                              f"expected one of {sorted(DRAFTER_FAMILIES)}")
    assert sorted(DRAFTER_FAMILIES) == ["gemma3_mtp", "gemma4_assistant"]


def generate(capsys, package, *flags):
    assert main(["generate", str(package), "--prompt", "w4 w5 w6", "--max-tokens", "13", *flags]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_generate_decodes_speculatively_through_the_seam(drafter_package, stand_in_mtp, capsys):
    plain_out, plain_err = generate(capsys, drafter_package)
    assert "speculative" not in plain_err
    out, err = generate(capsys, drafter_package, "--speculative", "mtp", "--no-adaptive", "--draft-length", "3")
    assert out == plain_out
    # 12 tokens after the first, 4 per fully accepted step; the oracle's drafts are all accepted
    assert "; speculative: 3 steps, 4.00 tokens/step, acceptance per draft position 1.00 1.00 1.00, " \
           "draft lengths 3-3]" in err, err
    stand_in_mtp.offset = 1
    out, err = generate(capsys, drafter_package, "--speculative", "mtp")  # the package's: adaptive from 3
    assert out == plain_out and "acceptance per draft position 0.00 0.00 0.00, draft lengths 1-3]" in err, err


def test_chat_decodes_speculatively_through_the_seam(drafter_package, stand_in_mtp, capsys, monkeypatch):
    outputs = []
    for flags in ([], ["--speculative", "mtp", "--draft-length", "2"]):
        messages = iter(["w5 w6", "", "w7 w8", "/bye"])  # an empty line is ignored; /bye ends the chat
        monkeypatch.setattr("builtins.input", lambda _prompt, messages=messages: next(messages))
        assert main(["chat", str(drafter_package), "--max-tokens", "8", *flags]) == 0
        outputs.append(capsys.readouterr().out)
        assert (stand_in_mtp.drafter is not None) == bool(flags)
    assert outputs[1] == outputs[0] and outputs[0].count("\n") == 2
    assert stand_in_mtp.drafter.proposals >= 4  # at least two steps a turn (8 tokens, at most 3 a step)
