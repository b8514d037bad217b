"""Tensor-name maps: which tensor of a source file fills which parameter, for weights stored
under names that are not transformers' (community extractions of a drafter, the TFLite drafter
inside a ``.litertlm`` file).

A name map is a YAML mapping (a family ships its own: ``pipeline/models/<family>/name_maps/*.yaml``,
linked from ``configs/name-maps/``; a config names one by ``mtp.name_map``), one
``key: value`` entry per line, keys and values strings:

* ``source name: target``.  The source name is a tensor name of the file, or a pattern in which
  ``{layer}`` stands for a layer index (decimal digits; all ``{layer}`` of one pattern stand for
  the same index) and ``*`` for any run of characters.  A name that an exact entry lists is not
  looked up in the patterns; a name that two patterns match is an error.
* The target is the transformers state-dict name the tensor holds, ``{layer}`` filled in from
  the source name; several, separated by commas, when one stored tensor serves several
  parameters (the LiteRT converter folds identical constants into one); or ``unused: <why>``
  for a tensor that is no parameter (RoPE tables, mask ranges, ...).
* ``constant: <number>: targets``: parameters the file does not store, filled with the number
  (e.g. a per-layer scalar the export folded away as 1); ``{layer}`` in a target stands for
  every layer.

Tensors are taken in their stored layout (``[out, in]`` for linear weights, as in PyTorch and
in TFLite ``FULLY_CONNECTED`` filters); a tensor in another layout fails the shape check.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from ..errors import PipelineError

LAYER = "{layer}"
UNUSED = "unused:"
CONSTANT = "constant:"


def _pattern(text: str) -> re.Pattern[str]:
    """``text`` with ``{layer}`` as a captured index (the same one each time) and ``*`` as any run."""
    regex, seen = "", False
    for part in re.split(r"(\{layer\}|\*)", text):
        if part == LAYER:
            regex += "(?P=layer)" if seen else "(?P<layer>[0-9]+)"
            seen = True
        else:
            regex += ".*" if part == "*" else re.escape(part)
    return re.compile(regex)


@dataclasses.dataclass(frozen=True)
class _Entry:
    key: str
    targets: tuple[str, ...]  # empty for an ``unused:`` entry
    match: re.Pattern[str] | None  # None: the key is an exact tensor name or a constant
    constant: float | None = None  # the value of a ``constant:`` entry


@dataclasses.dataclass(frozen=True)
class NameMap:
    """A parsed name map (see the module docstring); ``origin`` names it in messages.

    Raises (from the constructor):
        PipelineError: an entry that is not ``string: string``, an empty target list, an
            ``unused:`` without a reason, a constant that is not a number, a target with ``*``,
            or a target using ``{layer}`` when its key has none (constants excepted).
    """

    mapping: Mapping[str, str]
    origin: str = dataclasses.field(default="name map", compare=False, repr=False)
    _entries: tuple[_Entry, ...] = dataclasses.field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        entries = []
        for key, value in self.mapping.items():
            if not isinstance(key, str) or not key or not isinstance(value, str) or not value.strip():
                raise PipelineError(f"{self.origin}: {key!r}: {value!r}, expected 'source tensor name: "
                                    f"transformers name(s)' or 'source tensor name: unused: <why>'")
            entries.append(self._entry(key, value.strip()))
        object.__setattr__(self, "_entries", tuple(entries))

    def _entry(self, key: str, value: str) -> _Entry:
        where = f"{self.origin}: {key!r}"
        if value.startswith(UNUSED):
            if not value[len(UNUSED):].strip():
                raise PipelineError(f"{where}: {value!r}, expected 'unused: <why the tensor is no parameter>'")
            return _Entry(key, (), None if LAYER not in key and "*" not in key else _pattern(key))
        targets = tuple(t.strip() for t in value.split(","))
        constant = None
        if key.startswith(CONSTANT):
            try:
                constant = float(key[len(CONSTANT):])
            except ValueError:
                raise PipelineError(f"{where}: expected 'constant: <number>'") from None
        for target in targets:
            if not target or "*" in target:
                raise PipelineError(f"{where}: target {target!r} in {value!r}, expected transformers parameter "
                                    f"names separated by commas")
            if LAYER in target and LAYER not in key and constant is None:
                raise PipelineError(f"{where}: target {target!r} uses {LAYER}, but the source name has no "
                                    f"{LAYER} to take the index from")
        exact = constant is not None or (LAYER not in key and "*" not in key)
        return _Entry(key, targets, None if exact else _pattern(key), constant)

    @classmethod
    def read(cls, path: str | Path) -> NameMap:
        """Read and check the YAML name map ``path``.

        Raises:
            PipelineError: the file is missing or not a YAML mapping, or an entry is malformed.
        """
        path = Path(path)
        try:
            mapping = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PipelineError(f"{path}: name map not found") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise PipelineError(f"{path}: cannot read the name map: {err}") from None
        if not isinstance(mapping, dict) or not mapping:
            raise PipelineError(f"{path}: expected a mapping of source tensor names to ours, got {mapping!r}")
        return cls(mapping, str(path))

    def lookup(self, name: str) -> tuple[str, ...] | None:
        """The transformers names that source tensor ``name`` fills (empty for an ``unused:``
        tensor), or None when no entry matches it.

        Raises:
            PipelineError: two patterns match ``name``.
        """
        for entry in self._entries:
            if entry.match is None and entry.constant is None and entry.key == name:
                return entry.targets
        found = [(entry, m) for entry in self._entries if entry.match and (m := entry.match.fullmatch(name))]
        if len(found) > 1:
            raise PipelineError(f"{self.origin}: source tensor {name!r} matches both {found[0][0].key!r} and "
                                f"{found[1][0].key!r}; expected one entry per tensor")
        if not found:
            return None
        entry, match = found[0]
        layer = match.groupdict().get("layer") or ""
        return tuple(target.replace(LAYER, layer) for target in entry.targets)

    def constants(self, parameters: list[str]) -> dict[str, float]:
        """``{parameter: value}`` for the ``constant:`` entries, templates expanded over ``parameters``.

        Raises:
            PipelineError: a constant's target matches none of ``parameters``.
        """
        out: dict[str, float] = {}
        for entry in self._entries:
            if entry.constant is None:
                continue
            for target in entry.targets:
                matched = [name for name in parameters if _pattern(target).fullmatch(name)]
                if not matched:
                    raise PipelineError(f"{self.origin}: {entry.key!r}: target {target!r} matches no parameter of "
                                        f"the model, e.g. {parameters[0]!r}")
                out.update(dict.fromkeys(matched, entry.constant))
        return out

    def expected_source(self, target: str) -> str | None:
        """The source name (a pattern's index filled in) the map takes ``target`` from, if any."""
        for entry in self._entries:
            for template in entry.targets:
                if entry.constant is not None or not (match := _pattern(template).fullmatch(target)):
                    continue
                return entry.key.replace(LAYER, match.groupdict().get("layer") or "")
        return None
