"""The build: import -> convert (quantize) -> compile (per target) -> package.

Each stage's output lives in the stage cache (``$MLC_MTP_CACHE`` or ``~/.cache/mlc-mtp``) under a
key hashed from its inputs and settings (source file contents, config, quantization, target
preset, TVM version and this package's code), so an unchanged re-run does no work and says so;
``force`` redoes every stage.  Every directory, cached or final, is written in a temporary place
and renamed into place at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from . import __version__
from .compile.compiler import compile_module, export_model, library_name, system_lib_prefix
from .compile.link import find_program
from .compile.targets import TargetPreset, load_target
from .config import PipelineConfig
from .errors import PipelineError
from .models.draft_vocab import DRAFT_VOCAB, base_rows, read_token_counts, tied_embedding_name
from .models.name_map import NameMap
from .models.registry import Family, get_family
from .package.atomic import atomic_directory
from .package.libraries import write_outputs
from .package.tensor_cache import write_tensor_cache
from .package.write import PackagedModel, report_unlinked, write_package
from .presets import require_kernel_target
from .quantization import get_scheme, quantize_model, quantize_params, scheme_for_targets
from .sources.gguf_tokenizer import write_tokenizer_json

log = logging.getLogger(__name__)
SOURCE_TYPES = "source-types.json"  # import stage: our name -> the type the source stored
SOURCE_GROUPS = "source-groups.safetensors"  # import stage: <name>.scale / <name>.min of block types
# model.overrides that size the runtime's buffers and leave the weights as they are: the import
# stage neither reads nor keys them (changing the context window does not re-import a GGUF); they
# are applied to the imported config, as the loaders apply every override (``values.update``).
RUNTIME_OVERRIDES = ("context_window_size", "prefill_chunk_size", "max_batch_size")
# TVM logs this once per ``take`` it lowers in its default "fast" mode (the embedding lookup, the
# logit positions): out-of-range indices are not checked.  Token ids stay below the vocabulary
# (the build refuses a larger tokenizer, :func:`_check_tokenizer`) and logit positions come from the
# sequence itself, so the warning tells a user nothing; the build drops it from its stderr.
TAKE_WARNING = "Fast mode segfaults when there are out-of-bounds indices"
PACKAGE_RECORD = ".mlc-mtp-build.json"  # in the package: its build key and its files' sizes
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json")


def cache_root() -> Path:
    """Root of the stage cache."""
    return Path(os.environ.get("MLC_MTP_CACHE", Path.home() / ".cache" / "mlc-mtp"))


def _digest(*parts: Any) -> str:
    h = hashlib.blake2b(digest_size=12)
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        h.update(file.name.encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def _code_digest() -> str:
    root = Path(__file__).parent
    h = hashlib.blake2b(digest_size=8)
    for file in sorted(root.rglob("*.py")):
        h.update(file.read_bytes())
    return f"{__version__}-{h.hexdigest()}"


@dataclasses.dataclass
class StageReport:
    """What one stage did: ``cached`` true when its output was reused."""

    stage: str
    key: str
    cached: bool
    path: Path
    seconds: float = 0.0


@dataclasses.dataclass
class BuildResult:
    """The packaged directory and the per-stage reports."""

    output: Path
    stages: list[StageReport]
    libraries: dict[str, str]


def _stage(name: str, key: str, force: bool, produce: Callable[[Path], None],
           say: Callable[[str], None]) -> StageReport:
    path = cache_root() / f"{name}-{key}"
    if path.is_dir() and not force:
        say(f"{name}: up to date ({key}), nothing to do")
        return StageReport(name, key, True, path)
    start = time.perf_counter()
    if name.startswith(("compile", "drafter-compile")):  # minutes for a real model, with no bar of its own
        say(f"{name}: compiling with TVM {_tvm_version()} (minutes for a real model on a small CPU) ...")
    with atomic_directory(path) as tmp:
        produce(tmp)
    seconds = time.perf_counter() - start
    say(f"{name}: done in {seconds:.1f} s ({key})")
    return StageReport(name, key, False, path, seconds)


@dataclasses.dataclass
class ModelStages:
    """What import, convert and compile produced for one model (the base model or its drafter)."""

    config: Any
    imported: Path
    converted: Path
    libraries: dict[str, Path]  # preset name -> its compile stage's directory (files + outputs.json)


def _model_stages(role: str, family: Family, source_format: str, source_path: Path, overrides: dict[str, Any],
                  scheme, presets: list[TargetPreset], lib_stem: str, force: bool, progress: bool,
                  say: Callable[[str], None], reports: list[StageReport],
                  import_options: dict[str, Any] | None = None,
                  from_base: tuple[str, Callable[[], tuple[dict, dict, dict]]] | None = None) -> ModelStages:
    """Run (or reuse) import -> convert -> compile[target] for one model; ``role`` prefixes the
    stage names (``""`` for the base model, ``"drafter-"`` for its MTP drafter).  The import is
    the loader the family's registry row gives for ``source_format``, called with ``overrides``
    (a drafter whose config derives from its base model's gets ``{"base": base config}``) and
    ``import_options`` (architecture, name map), all of which key the stage.  ``from_base``:
    ``(key, make)``, where ``make()`` gives ``(weights, source types, group scales)`` the import
    adds from the base model's (a reduced drafting vocabulary: :mod:`pipeline.models.draft_vocab`);
    ``key`` (which keys the stage) names what they were made from."""
    code = _code_digest()
    import_options = import_options or {}
    runtime_overrides = {k: v for k, v in overrides.items() if k in RUNTIME_OVERRIDES}
    import_overrides = {k: v for k, v in overrides.items() if k not in RUNTIME_OVERRIDES}
    import_key = _digest(role + "import", code, family.name, source_format, _file_digest(source_path),
                         import_overrides, import_options, from_base[0] if from_base else None)

    def do_import(tmp: Path) -> None:
        source_info: dict[str, dict[str, Any]] = {}
        model_config, weights = family.formats[source_format].import_weights(
            family, source_format, source_path, import_overrides, progress, source_info=source_info,
            **import_options)
        if from_base is not None:
            extra, extra_types, extra_groups = from_base[1]()
            weights.update(extra)
            source_info.setdefault("types", {}).update(extra_types)
            source_info.setdefault("groups", {}).update(extra_groups)
        if progress:  # the bar counted the tensors read; saving them and the tokenizer take a while yet
            say(f"{role}import: tensors read; writing them{'' if role else ' and the tokenizer'} ...")
        (tmp / "model-config.json").write_text(json.dumps(model_config.to_dict(), indent=2))
        save_file(weights, str(tmp / "weights.safetensors"))
        (tmp / SOURCE_TYPES).write_text(json.dumps(source_info.get("types", {}), indent=1, sort_keys=True))
        groups = {f"{name}.{part}": array for name, pair in source_info.get("groups", {}).items()
                  for part, array in zip(("scale", "min"), pair) if array is not None}
        save_file(groups, str(tmp / SOURCE_GROUPS))
        if not role:
            _import_tokenizer(source_format, source_path, tmp / "tokenizer")

    reports.append(_stage(role + "import", import_key, force, do_import, say))
    imported = reports[-1].path
    model_config = family.config_cls(**{**json.loads((imported / "model-config.json").read_text()),
                                        **runtime_overrides})

    # convert: weights in the stored (quantized) form, as MLC's tensor cache.
    convert_key = _digest(role + "convert", code, import_key, scheme.name)
    source_types = json.loads((imported / SOURCE_TYPES).read_text())
    logical = family.model_cls(model_config, scheme.model_dtype)
    values = sum(int(np.prod([int(x) for x in p.shape])) for _, p in logical.named_parameters())
    model, formats = quantize_model(logical, scheme, source_types)
    params = [(name, [int(x) for x in p.shape], p.dtype) for name, p in model.named_parameters()]
    choices = {name: fmt.name for name, fmt in sorted(formats.items())}

    def do_convert(tmp: Path) -> None:
        weights = load_file(str(imported / "weights.safetensors"))
        groups = load_file(str(imported / SOURCE_GROUPS))

        def group_scales(name: str):
            scale = groups.get(f"{name}.scale")
            usable = scale is not None and scale.shape[-1] * formats[name].group_size == weights[name].shape[-1]
            return (scale, groups.get(f"{name}.min")) if usable else None

        stored = dict(quantize_params(tqdm(weights.items(), desc=role + "convert", unit="tensor",
                                           disable=not progress), formats, scheme,
                                      group_scales if scheme.keeps_source else None))
        for name, shape, dtype in params:
            array = stored[name]
            if list(array.shape) != shape or str(array.dtype) != dtype:
                raise PipelineError(f"convert: {name} is {array.shape} {array.dtype}, expected {shape} {dtype}")
        param_bytes = int(sum(stored[name].nbytes for name, _, _ in params))
        write_tensor_cache(((name, stored[name]) for name, _, _ in params), tmp,
                           {"ParamSize": len(params), "ParamBytes": param_bytes,
                            "BitsPerParam": round(param_bytes * 8 / values, 3), "Quantization": scheme.name,
                            "QuantizedWeights": choices,
                            "QuantFormats": {fmt.name: fmt.describe() for fmt in formats.values()}})

    reports.append(_stage(role + "convert", convert_key, force, do_convert, say))
    converted = reports[-1].path
    if formats:
        meta = json.loads((converted / "tensor-cache.json").read_text())["metadata"]
        counts = Counter(choices.values())
        say(f"{role}convert: {scheme.name}: " + ", ".join(f"{n} weights as {f}" for f, n in sorted(counts.items()))
            + f"; {meta['ParamBytes'] / 2**20:.1f} MiB stored ({meta['BitsPerParam']} bits per parameter)")

    libraries = {}
    for preset in presets:
        lib = library_name(lib_stem, scheme.name, preset)
        compile_key = _digest(role + "compile", code, family.name, lib, model_config.to_dict(), scheme.name,
                              choices, preset.path.read_text(), preset.resolved_target(), _tvm_version(),
                              find_program(preset.link["command"][0]) if preset.link else None)  # linked or not

        def do_compile(tmp: Path, preset=preset, lib=lib) -> None:
            with _stderr_without(TAKE_WARNING):
                mod, _, _ = export_model(family, model_config, scheme, preset, lib_stem, source_types)
                write_outputs(tmp, compile_module(mod, preset, tmp / lib, system_lib_prefix(lib_stem, scheme.name)))

        reports.append(_stage(f"{role}compile[{preset.name}]", compile_key, force, do_compile, say))
        libraries[preset.name] = reports[-1].path
    return ModelStages(model_config, imported, converted, libraries)


@contextlib.contextmanager
def _stderr_without(needle: str) -> Iterator[None]:
    """Within the block, drop the lines of file descriptor 2 (stderr, where TVM's C++ code logs)
    that contain ``needle``; every other line passes through unchanged."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if needle.encode() not in line:
                    os.write(saved, line)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last write end closes: the pump reads to its end
        thread.join(timeout=10)
        os.close(saved)


def _import_tokenizer(source_format: str, source_path: Path, directory: Path) -> None:
    """Tokenizer files of the base model: made from GGUF metadata, or copied from the HF directory."""
    directory.mkdir()
    if source_format == "gguf":
        write_tokenizer_json(source_path, directory)
        return
    for name in HF_TOKENIZER_FILES:
        if (source_path / name).exists():
            shutil.copy(source_path / name, directory / name)
    if not any(directory.iterdir()):
        raise PipelineError(f"{source_path}: no tokenizer files ({', '.join(HF_TOKENIZER_FILES)})")


def _check_tokenizer(directory: Path, vocab_size: int, source: Path) -> None:
    """Refuse a tokenizer with more tokens than the model's vocabulary: ids past the embedding would
    index outside it at run time (TVM's ``take`` does not check).  A tokenizer without
    ``tokenizer.json`` (only ``tokenizer.model``) is not checked.

    Raises:
        PipelineError: naming the source, both sizes and the key.
    """
    path = directory / "tokenizer.json"
    if not path.is_file():
        return
    from tokenizers import Tokenizer

    tokens = Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
    if tokens > vocab_size:
        raise PipelineError(f"{source}: tokenizer of {tokens} tokens, expected at most the model's vocab_size "
                            f"of {vocab_size} (ids past it would index outside the embedding)")


def _drafter_source(config: PipelineConfig) -> tuple[Family, str, Path, dict[str, Any]] | None:
    """The ``mtp`` section's ``(family, format, path, import options)``; None without one.

    The drafter's registry row says how its format is read (:attr:`Family.formats`).  A format
    read through a name map (``mtp.name_map``, else the format's default, e.g. the ``litertlm``
    map of :mod:`pipeline.models.gemma4_assistant.loader`) takes the config of the drafter's
    architecture (``mtp.architecture`` or the weights' config.json): the import options carry
    both.  A Hugging Face directory (``hf-safetensors``, given by ``mtp.path``) carries its own.

    Raises:
        PipelineError: speculative decoding is asked for without a drafter, the drafter source
            is missing or in a format the build cannot read yet, or its architecture or name map
            is missing or malformed.
    """
    if not config.mtp:
        if config.speculative["mode"] != "off":
            raise PipelineError(f"{config.path}: speculative.mode: {config.speculative['mode']!r} needs an "
                                f"'mtp' section naming the drafter")
        return None
    mtp = config.mtp
    family = get_family(mtp["family"])
    source_format = mtp.get("format", "hf-safetensors")
    if source_format != "hf-safetensors":
        name_map: NameMap | None
        if config.mtp_name_map is not None:
            name_map = NameMap(config.mtp_name_map, str((config.path.parent / mtp["name_map"]).resolve()))
        else:
            default = family.formats[source_format].default_name_map_path()
            name_map = None if default is None else NameMap.read(default)
        return family, source_format, config.mtp_path(), {"architecture": config.hf_config("mtp"),
                                                          "name_map": name_map}
    if "path" not in mtp:
        raise PipelineError(f"{config.path}: mtp: format {mtp.get('format')!r} with no path, "
                            f"expected hf-safetensors with a path")
    path = (config.path.parent / mtp["path"]).resolve()
    if not path.exists():
        raise PipelineError(f"{config.path}: mtp.path: {path} does not exist")
    return family, "hf-safetensors", path, {}


def _draft_vocab(config: PipelineConfig, section: dict[str, Any], family: Family, base: ModelStages):
    """``(from_base, size)`` for the drafter's import: the base's tied-embedding rows of the
    tokens ``section`` (``mtp.draft_vocab``) names (:func:`pipeline.models.draft_vocab.base_rows`).

    Raises:
        PipelineError: a bad counts file (:func:`~pipeline.models.draft_vocab.read_token_counts`).
    """
    counts = (config.path.parent / section["counts"]).resolve()
    ids = read_token_counts(counts, section["size"], base.config.vocab_size, f"{config.path}: mtp.draft_vocab")
    embedding = tied_embedding_name(family.model_cls(base.config))
    types = json.loads((base.imported / SOURCE_TYPES).read_text())

    def make():
        return base_rows(ids, base.imported / "weights.safetensors", base.imported / SOURCE_GROUPS, embedding, types)

    key = _digest("draft-vocab", base.imported.name, _file_digest(counts), section["size"])
    return (key, make), len(ids)


def build(config: PipelineConfig, targets: list[str] | None = None, output: Path | None = None,
          force: bool = False, quantization: str | None = None, progress: bool = True,
          say: Callable[[str], None] = print) -> BuildResult:
    """Run every stage for ``config`` (and its ``mtp`` drafter) and write the package to ``output``
    (default: the config's; layout: :mod:`pipeline.package.write`).  A library left for the user
    to link (a Metal ``.tar`` where no Mac linker exists) is reported through ``say`` with the
    command.

    Raises:
        PipelineError: any bad input (source, config, target); nothing is written to ``output``.
    """
    family = get_family(config.family)
    presets: list[TargetPreset] = [load_target(t) for t in (targets or config.targets)]
    for preset in presets:  # refuse a target before any stage runs
        preset.check_buildable()
        preset.tvm_target()  # TVM accepts the target dict
        require_kernel_target(preset.target["kind"], f"{preset.path}: target {preset.name}")
    scheme = scheme_for_targets(get_scheme(quantization or config.quantization), presets, explicit=bool(quantization),
                                where=f"{config.path}: quantization", say=say)
    drafter_source = _drafter_source(config)
    output = Path(output or config.output)
    source_path = config.source_path()
    reports: list[StageReport] = []
    base = _model_stages("", family, config.source_format, source_path, config.overrides, scheme, presets,
                         config.name, force, progress, say, reports)
    _check_tokenizer(base.imported / "tokenizer", base.config.vocab_size, source_path)
    drafter = None
    speculative = config.speculative
    if drafter_source is not None:
        family_d, format_d, path_d, options_d = drafter_source
        overrides_d = {"base": base.config.to_dict()} if family_d.config_from_base else {}
        from_base = None
        if config.mtp and "draft_vocab" in config.mtp:
            from_base, overrides_d["draft_vocab_size"] = _draft_vocab(config, config.mtp["draft_vocab"], family, base)
            speculative = {**speculative, "draft_vocab": {
                "size": overrides_d["draft_vocab_size"], "param": DRAFT_VOCAB,
                "counts": Path(config.mtp["draft_vocab"]["counts"]).name}}
        drafter = _model_stages("drafter-", family_d, format_d, path_d, overrides_d, scheme, presets,
                                f"{config.name}-drafter", force, progress, say, reports, options_d, from_base)

    by_name = {preset.name: preset for preset in presets}
    package_key = _digest("package", _code_digest(), [r.key for r in reports], config.name, family.name,
                          config.source_format, str(source_path), config.generation, config.speculative,
                          {name: preset.resolved_target() for name, preset in by_name.items()},
                          None if drafter_source is None else drafter_source[0].name)
    if not force and _package_intact(output, package_key):
        say(f"package: {output} already holds this build ({package_key}); left as it is")
        record = json.loads((output / PACKAGE_RECORD).read_text())
        return BuildResult(output, reports, record["model_lib"])
    libraries, entries = write_package(
        output, model_config=base.config, family=family.name, quantization=scheme.name,
        base=PackagedModel(base.converted, base.libraries), tokenizer=base.imported / "tokenizer",
        tvm_targets={name: preset.resolved_target() for name, preset in by_name.items()},
        source={"format": config.source_format, "path": str(source_path)}, generation=config.generation,
        speculative=speculative,
        drafter=None if drafter is None else PackagedModel(drafter.converted, drafter.libraries),
        drafter_family=None if drafter_source is None else drafter_source[0].name)
    report_unlinked(entries, {name: preset.link["command"][0] for name, preset in by_name.items() if preset.link},
                    output, say)
    _record_package(output, package_key, libraries)
    say(f"package: wrote {output}")
    return BuildResult(output, reports, libraries)


def _package_files(output: Path) -> dict[str, int]:
    return {str(p.relative_to(output)): p.stat().st_size for p in sorted(output.rglob("*"))
            if p.is_file() and p.name != PACKAGE_RECORD}


def _record_package(output: Path, key: str, libraries: dict[str, str]) -> None:
    """Note in the package the build key it was written for and its files' sizes (what
    :func:`_package_intact` compares); written after the package itself, so a package without a
    complete note is written again."""
    record = {"key": key, "model_lib": libraries, "files": _package_files(output)}
    tmp = output / f"{PACKAGE_RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, output / PACKAGE_RECORD)


def _package_intact(output: Path, key: str) -> bool:
    """Whether ``output`` holds the package of build ``key`` with every file at its recorded size
    (an up-to-date build then leaves it as it is)."""
    try:
        record = json.loads((output / PACKAGE_RECORD).read_text())
    except (OSError, ValueError):
        return False
    return record.get("key") == key and record.get("files") == _package_files(output)


def _tvm_version() -> str:
    import tvm

    return tvm.__version__
