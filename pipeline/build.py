"""The build: import -> convert (quantize) -> compile (per target) -> package.

Each stage's output lives in the stage cache (``$MLC_MTP_CACHE`` or ``~/.cache/mlc-mtp``) under a
key hashed from its inputs and settings (source file contents, config, quantization, target
preset, TVM version and this package's code), so an unchanged re-run does no work and says so;
``force`` redoes every stage.  Every directory, cached or final, is written in a temporary place
and renamed into place at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from . import __version__
from .compile.build import compile_module, export_model, library_name
from .compile.targets import TargetPreset, load_target
from .config import PipelineConfig
from .errors import PipelineError
from .models.importer import import_weights
from .models.kv_cache import require_kernel_target
from .models.registry import get_family
from .package.atomic import atomic_directory
from .package.chat_config import RUNTIME_CONFIG, chat_config
from .package.tensor_cache import write_tensor_cache
from .quantization import get_scheme, quantize_model, quantize_params
from .sources.gguf_tokenizer import write_tokenizer_json

log = logging.getLogger(__name__)
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


def _stage(name: str, key: str, force: bool, produce: Callable[[Path], None], say: Callable[[str], None]) -> StageReport:
    path = cache_root() / f"{name}-{key}"
    if path.is_dir() and not force:
        say(f"{name}: up to date ({key}), nothing to do")
        return StageReport(name, key, True, path)
    start = time.perf_counter()
    with atomic_directory(path) as tmp:
        produce(tmp)
    seconds = time.perf_counter() - start
    say(f"{name}: done in {seconds:.1f} s ({key})")
    return StageReport(name, key, False, path, seconds)


def build(config: PipelineConfig, targets: list[str] | None = None, output: Path | None = None,
          force: bool = False, quantization: str | None = None, progress: bool = True,
          say: Callable[[str], None] = print) -> BuildResult:
    """Run every stage for ``config`` and write the package to ``output`` (default: the config's).

    Raises:
        PipelineError: any bad input (source, config, target); nothing is written to ``output``.
    """
    family = get_family(config.family)
    scheme = get_scheme(quantization or config.quantization)
    presets: list[TargetPreset] = [load_target(t) for t in (targets or config.targets)]
    for preset in presets:  # refuse a target before any stage runs
        preset.check_buildable()
        require_kernel_target(preset.target["kind"], f"{preset.path}: target {preset.name}")
    if config.speculative["mode"] != "off":  # no drafter is built yet, so no package could use it
        raise PipelineError(f"{config.path}: speculative.mode: {config.speculative['mode']!r}, expected 'off': "
                            f"this build packages no drafter yet")
    output = Path(output or config.output)
    source_path = config.source_path()
    code = _code_digest()
    reports = []

    # 1. import: dequantized float32 weights in our names, model config, tokenizer files.
    import_key = _digest("import", code, config.family, config.source_format, _file_digest(source_path),
                         config.overrides)

    def do_import(tmp: Path) -> None:
        model_config, weights = import_weights(family, config.source_format, source_path, config.overrides, progress)
        (tmp / "model-config.json").write_text(json.dumps(model_config.to_dict(), indent=2))
        save_file(weights, str(tmp / "weights.safetensors"))
        tok = tmp / "tokenizer"
        tok.mkdir()
        if config.source_format == "gguf":
            write_tokenizer_json(source_path, tok)
        else:
            for name in HF_TOKENIZER_FILES:
                if (source_path / name).exists():
                    shutil.copy(source_path / name, tok / name)
            if not any(tok.iterdir()):
                raise PipelineError(f"{source_path}: no tokenizer files ({', '.join(HF_TOKENIZER_FILES)})")

    reports.append(_stage("import", import_key, force, do_import, say))
    imported = reports[-1].path
    model_config = family.config_cls(**json.loads((imported / "model-config.json").read_text()))

    # 2. convert: weights in the stored (quantized) form, as MLC's tensor cache.
    convert_key = _digest("convert", code, import_key, scheme.name)
    model, quantized = quantize_model(family.model_cls(model_config, scheme.model_dtype), scheme)
    params = [(name, [int(x) for x in p.shape], p.dtype) for name, p in model.named_parameters()]

    def do_convert(tmp: Path) -> None:
        weights = load_file(str(imported / "weights.safetensors"))
        stored = dict(quantize_params(tqdm(weights.items(), desc="convert", unit="tensor", disable=not progress),
                                      quantized, scheme))
        for name, shape, dtype in params:
            array = stored[name]
            if list(array.shape) != shape or str(array.dtype) != dtype:
                raise PipelineError(f"convert: {name} is {array.shape} {array.dtype}, expected {shape} {dtype}")
        write_tensor_cache(((name, stored[name]) for name, _, _ in params), tmp,
                           {"ParamSize": len(params), "ParamBytes": int(sum(a.nbytes for a in stored.values())),
                            "BitsPerParam": 4 if scheme.quantized else np.dtype(scheme.model_dtype).itemsize * 8})

    reports.append(_stage("convert", convert_key, force, do_convert, say))
    converted = reports[-1].path

    # 3. compile, per target.
    libraries = {}
    lib_dirs = []
    for preset in presets:
        lib = library_name(config.name, scheme.name, preset)
        compile_key = _digest("compile", code, model_config.to_dict(), scheme.name, preset.path.read_text(),
                              preset.resolved_target(), _tvm_version())

        def do_compile(tmp: Path, preset=preset, lib=lib) -> None:
            mod, _, _ = export_model(family, model_config, scheme, preset, config.name)
            compile_module(mod, preset, tmp / lib)

        reports.append(_stage(f"compile[{preset.name}]", compile_key, force, do_compile, say))
        libraries[preset.name] = f"lib/{lib}"
        lib_dirs.append((reports[-1].path, lib))

    # 4. package.
    with atomic_directory(output) as tmp:
        for file in converted.iterdir():
            shutil.copy(file, tmp / file.name)
        tokenizer_files = []
        for file in sorted((imported / "tokenizer").iterdir()):
            shutil.copy(file, tmp / file.name)
            tokenizer_files.append(file.name)
        (tmp / "lib").mkdir()
        for lib_dir, lib in lib_dirs:
            shutil.copy(lib_dir / lib, tmp / "lib" / lib)
        chat = chat_config(model_config, family.name, scheme.name, config.generation, tokenizer_files)
        (tmp / "mlc-chat-config.json").write_text(json.dumps(chat, indent=2))
        runtime = {  # our runtime's own config, beside MLC's
            "model_lib": libraries,
            "source": {"format": config.source_format, "path": str(source_path)},
            "generation": {k: config.generation[k] for k in ("max_tokens", "stop")},
            "speculative": {**config.speculative, "drafter_lib": None, "drafter_weights": None},
        }
        (tmp / RUNTIME_CONFIG).write_text(json.dumps(runtime, indent=2))
    say(f"package: wrote {output}")
    return BuildResult(output, reports, libraries)


def _tvm_version() -> str:
    import tvm  # pylint: disable=import-outside-toplevel

    return tvm.__version__
