"""Gemma 3 270M's ``vulkan`` library on a real GPU's Vulkan driver: the CPU build's greedy tokens and
decode speed beside CUDA's (docs/vulkan.md; ``scripts/run_cuda_check.sh stage DIR --vulkan`` and
``... vulkan OUTDIR`` drive it).

- ``build DIR`` (here, where TVM's compiler and the Vulkan plugins are): writes
  ``DIR/gemma3-270m-q4f16_1`` (``configs/gemma3-270m.yaml`` in q4f16_1 with ``cpu``, ``cuda`` and
  ``vulkan`` libraries) and, from its CPU library, ``DIR/vulkan-expected.json`` (the greedy tokens of
  :data:`PROMPTS`) with ``DIR/vulkan-expected.npz`` (each prompt's first-step float32 logits);
- ``check DIR --out FILE.json`` (on the GPU machine): the package's ``vulkan`` library on Vulkan
  device 0 must give those tokens (exit status 1 otherwise); prints the first-step logits'
  largest difference from the CPU build's, and decode tok/s (``scripts/gpu_speed.py``'s
  ``plain_speed``: 128 tokens after a 128- and a 1024-token prompt) for the ``vulkan`` library and,
  where the package has one, the ``cuda`` library on the same machine.

The target of the ``vulkan`` library is the preset's declared set narrowed to the Vulkan device of
the building machine, if it has one (:func:`pipeline.compile.vulkan.fit_target`); an NVIDIA GPU's
driver has every capability the preset declares.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

PACKAGE = "gemma3-270m-q4f16_1"
EXPECTED, EXPECTED_LOGITS = "vulkan-expected.json", "vulkan-expected.npz"
GREEDY_TOKENS = 32
# A short text prompt and one past the 512-token sliding window (the decode attention's both paths).
PROMPTS = {"short": "The three primary colors are", "long_796": 796}


def prompt_ids(engine, spec) -> list[int]:
    """Token ids of a :data:`PROMPTS` value: text after BOS, or ``gpu_speed.context_prompt`` of that length."""
    from gpu_speed import context_prompt

    if isinstance(spec, int):
        return context_prompt(engine, spec)
    return [engine.chat_config["bos_token_id"]] + engine.tokenizer.encode(spec, add_special_tokens=False).ids


def greedy(engine, margins: bool = False) -> tuple[dict, dict]:
    """Per prompt: ``{"prompt_tokens", "tokens"}`` (``GREEDY_TOKENS`` greedy ids, argmax on the
    device as ``generate`` takes it) and the first-step float32 logits (numpy, (vocab,)).  With
    ``margins``, also ``"margins"``: at each of those steps, the largest logit minus the second
    largest (float32 logits copied to the host, the same tokens fed): a small one is a near tie,
    which a library computing in another order may break the other way."""
    from pipeline.runtime.generate import generate
    from pipeline.runtime.sampling import Sampler

    rows, logits = {}, {}
    for name, spec in PROMPTS.items():
        ids = prompt_ids(engine, spec)
        engine.reset()
        logits[name] = np.asarray(engine.prefill(ids), dtype=np.float32).reshape(-1)
        rows[name] = {"prompt_tokens": len(ids), "tokens": [int(t) for t in generate(engine, ids, GREEDY_TOKENS,
                                                                                      Sampler())]}
        if margins:
            engine.reset()
            step, gaps = engine.prefill(ids), []
            for token in rows[name]["tokens"]:
                top = np.sort(np.asarray(step, dtype=np.float32).reshape(-1))[-2:]
                gaps.append(round(float(top[1] - top[0]), 5))
                step = engine.decode(token)
            rows[name]["margins"] = gaps
    return rows, logits


def build(out: Path) -> None:
    """The package (cpu, cuda, vulkan) and the CPU build's greedy tokens and logits in ``out``."""
    from pipeline.build import build as build_package
    from pipeline.config import load_config
    from pipeline.runtime.engine import Engine

    config = load_config(ROOT / "configs" / "gemma3-270m.yaml")
    package = build_package(config, targets=["cpu", "cuda", "vulkan"], quantization="q4f16_1",
                            output=out / PACKAGE, progress=False, say=print).output
    rows, logits = greedy(Engine(package, target="cpu"), margins=True)
    (out / EXPECTED).write_text(json.dumps({"package": PACKAGE, "target": "cpu", "greedy": rows}, indent=1))
    np.savez_compressed(out / EXPECTED_LOGITS, **logits)
    print(json.dumps(rows))


def check(packages: Path, out: Path | None, repeats: int, contexts: list[int]) -> int:
    """Run the check on this machine's Vulkan device 0 (and CUDA GPU 0 where the package has a
    ``cuda`` library); decode speed after a prompt of each of ``contexts`` tokens (none: greedy
    tokens only, e.g. a smoke test on lavapipe); write the result to ``out``.  A ``cuda`` library
    with no CUDA device is skipped, saying so.  Returns the exit status: 1 when the Vulkan
    library's greedy tokens differ from the CPU build's."""
    from gpu_speed import plain_speed  # also installs the NVRTC compile callback (cuda_runtime_only)

    from pipeline.compile import vulkan  # describe() needs TVM's runtime only
    from pipeline.errors import PipelineError
    from pipeline.runtime.engine import Engine

    package = packages / PACKAGE
    expected = json.loads((packages / EXPECTED).read_text())["greedy"]
    cpu_logits = np.load(packages / EXPECTED_LOGITS)
    print(vulkan.describe(), flush=True)
    libs = json.loads((package / "mlc-mtp-config.json").read_text())["model_lib"]
    result: dict = {"backend": vulkan.describe(), "expected_from": "cpu"}
    status = 0
    for target in [t for t in ("vulkan", "cuda") if t in libs]:
        try:
            engine = Engine(package, target=target)
        except PipelineError as err:  # no CUDA GPU (a smoke test on lavapipe): say so, go on
            if target == "vulkan":
                raise
            result[target] = {"skipped": str(err)}
            print(f"{target}: skipped: {err}", flush=True)
            continue
        rows, logits = greedy(engine)
        part = result.setdefault(target, {"device": str(getattr(engine.device, "device_name", engine.device))})
        for name, row in rows.items():
            want = expected[name]
            row["same_as_cpu"] = row["tokens"] == want["tokens"]
            row["first_logits_max_abs_diff"] = float(np.max(np.abs(logits[name] - cpu_logits[name])))
            where = next((i for i, (a, b) in enumerate(zip(row["tokens"], want["tokens"])) if a != b),
                         None if len(row["tokens"]) == len(want["tokens"]) else min(len(row["tokens"]),
                                                                                      len(want["tokens"])))
            row["first_difference"] = where  # token index, None where identical
            if where is not None and where < len(want.get("margins", [])):
                row["cpu_margin_there"] = want["margins"][where]
            print(f"{target} {name}: {row['prompt_tokens']} prompt tokens, greedy tokens the CPU build's: "
                  f"{row['same_as_cpu']}" + ("" if where is None else f" (first differs at token {where}, where "
                                             f"the CPU's top two logits are {row.get('cpu_margin_there')} apart)")
                  + f", first logits within {row['first_logits_max_abs_diff']:.3g}", flush=True)
            if target == "vulkan" and not row["same_as_cpu"]:
                status = 1
        part["greedy"] = rows
        part["plain"] = [plain_speed(engine, n, repeats) for n in contexts]
        print(target, json.dumps(part["plain"]), flush=True)
        del engine
    if out:
        out.write_text(json.dumps(result, indent=1))
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["build", "check"])
    parser.add_argument("dir", type=Path, help="where the package and the expected tokens are (or go)")
    parser.add_argument("--out", type=Path, help="check: result JSON")
    parser.add_argument("--repeats", type=int, default=3, help="check: timed runs per context (median)")
    parser.add_argument("--contexts", type=int, nargs="*", default=[128, 1024],
                        help="check: prompt lengths to time decode after (none: no timing)")
    args = parser.parse_args()
    if args.step == "build":
        build(args.dir)
    else:
        sys.exit(check(args.dir, args.out, args.repeats, args.contexts))


if __name__ == "__main__":
    main()
