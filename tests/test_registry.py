"""The model-family registry is the one home of family names: no module of ``pipeline/`` outside
``pipeline/models/registry.py`` and the family's own folder (``pipeline/models/<name>/``) spells
a family name (or an alias) as a string literal; and the registry imports without TVM's compiler."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.config.schema import SCHEMA, SPECULATIVE_MODES
from pipeline.models.registry import ALIASES, FAMILIES, get_family

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipeline"
REGISTRY = PIPELINE / "models" / "registry.py"
# Files not yet moved onto the registry, with why; each entry is work left, not a permission.
PENDING: dict[str, set[str]] = {}
# Words of the config's own vocabulary (YAML sections, speculative modes): an alias that is one of
# them (``mtp``) cannot be told from them by spelling alone, so it is checked where a family is meant.
VOCABULARY = set(SCHEMA["properties"]) | set(SPECULATIVE_MODES)


def _literals(source: str) -> list[tuple[int, str]]:
    """``(line, value)`` of every string constant of the module ``source``."""
    tree = ast.parse(source)
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def _family_uses(source: str, word: str) -> list[int]:
    """Lines of module ``source`` where ``word`` is used as a family: compared with, assigned to,
    or passed as, a name containing ``family``, or as the value of a ``"family"`` key."""
    tree = ast.parse(source)
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            if any(isinstance(p, ast.Constant) and p.value == word for p in parts) and \
                    "family" in ast.unparse(node).replace(repr(word), ""):
                lines.append(node.lineno)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(value, ast.Constant) and value.value == word and isinstance(key, ast.Constant) \
                        and "family" in str(key.value):
                    lines.append(node.lineno)
        elif isinstance(node, (ast.keyword, ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant) \
                and node.value.value == word:
            target = node.arg if isinstance(node, ast.keyword) else ast.unparse(node).split("=")[0]
            if "family" in (target or "").lower():
                lines.append(node.lineno)
    return lines


def _own_folder(path: Path, family: str) -> bool:
    return path == REGISTRY or PIPELINE / "models" / family in path.parents


def test_family_names_live_in_the_registry_and_their_folders():
    names = {name: name for name in FAMILIES} | ALIASES  # spelling -> family
    found = []
    for path in sorted(PIPELINE.rglob("*.py")):
        relative, source = str(path.relative_to(ROOT)), path.read_text()
        for line, value in _literals(source):
            family = names.get(value)
            if family is None or value in VOCABULARY or _own_folder(path, family) \
                    or value in PENDING.get(relative, ()):
                continue
            found.append(f"{relative}:{line}: {value!r}")
        for alias in ALIASES.keys() & VOCABULARY:
            if not _own_folder(path, ALIASES[alias]):
                found += [f"{relative}:{line}: {alias!r} as a family" for line in _family_uses(source, alias)]
    assert not found, "family names outside pipeline/models/registry.py and their folders:\n" + "\n".join(found)


def test_the_check_sees_a_family_name():
    """The scans above find what they look for (a guard against a check that passes vacuously)."""
    assert (3, "gemma4") in _literals('"""doc"""\n\nFAMILY = "gemma4"\n')
    sample = ('if family == "mtp":\n    pass\nx = {"family": "mtp"}\nf(drafter_family="mtp")\n'
              'drafter_family = "mtp"\nmode = "mtp"\nsection = config["mtp"]\n')
    assert sorted(_family_uses(sample, "mtp")) == [1, 3, 4, 5]


def test_repository_configs_use_family_names_not_aliases():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        used = [config["model"]["family"], *([config["mtp"]["family"]] if "mtp" in config else [])]
        assert not set(used) & set(ALIASES), f"{path}: {used}"
        assert all(name in FAMILIES for name in used), f"{path}: {used}"


def test_rows_are_complete():
    for name, row in FAMILIES.items():
        assert row.name == name and row.role in ("base", "drafter") and row.formats
        assert all(fmt.name_map in ("required", "optional", "refused") for fmt in row.formats.values())
        if row.role == "base":
            assert row.chat_template and not row.drafts_for and row.runtime_drafter is None
        else:
            assert row.drafts_for and all(FAMILIES[b].role == "base" for b in row.drafts_for)
            assert row.runtime_drafter and row.chat_template is None
    assert get_family("mtp") is FAMILIES["gemma3_mtp"]


def test_registry_schema_and_config_loader_import_without_the_compiler():
    """No ``tvm.relax`` and no model definition is imported by the registry, the schema, the config
    loader or the chat config (a runtime-only machine imports them)."""
    code = ("import sys; import pipeline.models.registry, pipeline.config, pipeline.package.chat_config; "
            "bad = sorted(m for m in sys.modules if m.startswith('tvm.relax') or m.endswith('.model')); "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
