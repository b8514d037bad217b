"""Shared fixtures: a stage cache private to the test session, and the tiny Gemma 3 package
(helpers live in :mod:`tests.helpers`)."""

from __future__ import annotations

import json
import os

import pytest

from pipeline.config import load_config
from tests.helpers.gemma3 import make_tiny_gemma3
from tests.helpers.packages import build_package, write_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def private_stage_cache(tmp_path_factory):
    """Keep build stages of the tests out of the user's cache."""
    os.environ["MLC_MTP_CACHE"] = str(tmp_path_factory.mktemp("stage-cache"))


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    """The config of a tiny random Gemma 3 (seed 1, one safetensors file), q0f32 for the CPU."""
    root = tmp_path_factory.mktemp("build")
    make_tiny_gemma3(root / "hf", seed=1, shard=False)
    return load_config(write_config(root / "tiny.yaml", root / "hf"))


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory):
    """A tiny random Gemma 3 built end to end (q0f32, CPU) and its transformers twin."""
    root = tmp_path_factory.mktemp("tiny")
    hf_model = make_tiny_gemma3(root / "hf")
    assert len(json.loads((root / "hf" / "model.safetensors.index.json").read_text())["weight_map"]) > 0
    return build_package(root, root / "hf"), hf_model
