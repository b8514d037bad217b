"""The base install works without the optional extras (pyproject.toml's ``litert`` and ``demo``):
with their modules made unimportable, the package imports, a GGUF config loads, its GGUF
is imported into the family's weights and inspected, and none of those modules was loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipeline import extras
from tests.helpers.gguf_files import write_gguf
from tests.helpers.packages import write_config

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = sorted({m for modules in extras.EXTRA_MODULES.values() for m in modules} | {"google.protobuf"})

SCRIPT = """
import importlib.abc, sys
from pathlib import Path

BLOCKED = {blocked!r}

def blocked(name):
    return any(name == b or name.startswith(b + ".") for b in BLOCKED)

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if blocked(name):
            raise ModuleNotFoundError(f"No module named {{name!r}}")
        return None

sys.meta_path.insert(0, Block())
import pipeline.build, pipeline.cli
from pipeline.config import load_config
from pipeline.models.importer import import_weights
from pipeline.models.registry import get_family
from pipeline.sources.describe import inspect_file

config = load_config(sys.argv[1])
_, weights = import_weights(get_family("gemma3"), "gguf", Path(sys.argv[2]), config.overrides, progress=False)
print("weights", len(weights))
print(inspect_file(sys.argv[2]).splitlines()[0])
print("missing", pipeline.extras.missing_modules("litert"))
assert not [name for name in sys.modules if blocked(name)]
"""


def test_gguf_configs_need_no_extra(tmp_path):
    gguf_path = write_gguf(tmp_path / "tiny.gguf")
    config = write_config(tmp_path / "c.yaml", gguf_path, fmt="gguf")
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(blocked=BLOCKED), str(config), str(gguf_path)],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "weights 15" in lines, proc.stdout
    assert any(line.startswith("GGUF file") and "architecture gemma3" in line for line in lines), proc.stdout
    assert "missing ['ai_edge_litert', 'litert_lm_builder', 'flatbuffers']" in lines, proc.stdout
