"""A copy of the tiny package that names drafter files, and a stand-in class for its drafter family."""

from __future__ import annotations

import json
import shutil

import pytest

from pipeline.package.chat_config import RUNTIME_CONFIG
from pipeline.runtime import drafters
from tests.helpers.stand_ins import SelfDrafter

STAND_IN_FAMILY = "stand_in"


@pytest.fixture(scope="session")
def drafter_package(tiny_package, tmp_path_factory):
    """The tiny package with ``speculative.drafter_lib`` / ``drafter_weights`` set (placeholder files)
    and ``drafter_family`` the stand-in's (:func:`stand_in_mtp`)."""
    package = tmp_path_factory.mktemp("with-drafter") / "pkg"
    shutil.copytree(tiny_package[0], package)
    (package / "lib" / "drafter-cpu.so").write_bytes(b"stand-in")
    (package / "drafter").mkdir()
    runtime = json.loads((package / RUNTIME_CONFIG).read_text())
    runtime["speculative"].update(drafter_lib={"cpu": "lib/drafter-cpu.so"}, drafter_weights="drafter",
                                 drafter_family=STAND_IN_FAMILY)
    (package / RUNTIME_CONFIG).write_text(json.dumps(runtime))
    return package


@pytest.fixture
def stand_in_mtp(monkeypatch):
    """Load the stand-in family's drafters as :class:`SelfDrafter` (greedy oracle) with the offset set here
    (``stand_in_mtp.offset = 1`` makes every draft wrong); ``stand_in_mtp.drafter`` is the last one loaded."""

    class Loader:
        offset, drafter = 0, None

        def __call__(self, engine, library, weights):
            assert library.name == "drafter-cpu.so" and weights.name == "drafter"
            self.drafter = SelfDrafter(engine.package, self.offset)
            return self.drafter

    loader = Loader()
    monkeypatch.setitem(drafters.DRAFTER_FAMILIES, STAND_IN_FAMILY, loader)
    return loader
