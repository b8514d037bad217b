"""Shared fixtures: a stage cache private to the test session, and the tiny Gemma 3 package
(helpers live in :mod:`tests.helpers`).

Tests that use a built package (these fixtures, directly or through another fixture) are marked
``compile``; ``-m "not slow and not compile"`` runs the quick part.  Test modules import helpers
from :mod:`tests.helpers` only, never from one another or from a conftest: checked when the session
starts."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from pipeline.config import load_config
from tests.helpers.gemma3 import make_tiny_gemma3
from tests.helpers.packages import build_package, write_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TESTS = Path(__file__).resolve().parent
# The fixtures that build a package: a test using one of them (even through another fixture) compiles.
BUILDING_FIXTURES = {"tiny_package", "tiny_config"}


def imports_of_other_tests(path: Path) -> list[str]:
    """The imports in ``path`` that reach a test module or a conftest (anything under ``tests/``
    outside :mod:`tests.helpers`, by package path or by bare file name); ``file:line: module``."""
    siblings = {p.stem for p in TESTS.rglob("*.py") if TESTS / "helpers" not in p.parents}
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            helper = name == "tests.helpers" or name.startswith("tests.helpers.")
            if (top == "tests" and not helper) or top in siblings:
                found.append(f"{path.relative_to(TESTS.parent)}:{node.lineno}: {name}")
    return found


def pytest_sessionstart(session):
    """Refuse to run while a test module or conftest imports another test module or a conftest."""
    found = [line for path in sorted(TESTS.rglob("*.py")) for line in imports_of_other_tests(path)]
    if found:
        raise pytest.UsageError("tests import other tests (move the shared code to tests/helpers/):\n"
                                + "\n".join(found))


def pytest_collection_modifyitems(items):
    """Mark ``compile`` every test that uses a package-building fixture."""
    for item in items:
        if BUILDING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.compile)


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
