"""The tiny Gemma 3 package with an echoing ``gemma3_mtp`` head, for the drafter tests."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import save_file

from tests.helpers.packages import build_package
from tests.helpers.references import echo_head


@pytest.fixture(scope="module")
def mtp_package(tiny_package, tmp_path_factory):
    """The tiny base with the echo head, built by the pipeline (q0f32, CPU), speculation on."""
    root = tmp_path_factory.mktemp("mtp-family")
    hf_dir = tiny_package[0].parent / "hf"
    save_file(echo_head(tiny_package[1]), str(root / "head.safetensors"))
    # full attention: every entry of the head's cache counts (a stale one would show), not only
    # the tiny model's last 8
    (root / "head.json").write_text(json.dumps({"_comment": "test", "layer_type": "full_attention"}))
    return build_package(
        root, hf_dir, speculative={"mode": "mtp", "draft_length": 2},
        mtp={"family": "gemma3_mtp", "format": "safetensors", "path": "head.safetensors", "architecture": "head.json"})
