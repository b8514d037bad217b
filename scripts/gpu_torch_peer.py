"""A GPU peer for docs/cuda.md's decode speed: transformers' Gemma 3 at Gemma 3 270M's exact
configuration (read from a package's ``mlc-chat-config.json``) with **random** weights (synthetic:
decode speed does not depend on the values; no real weights reach the GPU machine), bfloat16, on
CUDA, batch 1, greedy, in the same run as ``scripts/gpu_speed.py``:

- ``eager``: ``generate`` with transformers' default (dynamic) cache;
- ``static_compiled``: ``generate`` with ``cache_implementation="static"`` and a ``CompileConfig``
  (``torch.compile`` of the decode step, ``fullgraph``, mode ``reduce-overhead``: CUDA graphs).

Decode tok/s = (new tokens - 1) / (time of a ``generate`` of N new tokens - time of one of 1 new
token), medians over repeats after warm-ups; prompt: 128 (or ``--context``) random ids.

Usage: ``python scripts/gpu_torch_peer.py PACKAGE [--out FILE.json] [--context 128 1024]``.
Needs torch and transformers (the GPU machine's python3 has both).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

NEW_TOKENS = 128


def config_from_package(package: Path):
    """A transformers ``Gemma3TextConfig`` with the package's model configuration."""
    from transformers import Gemma3TextConfig

    model = json.loads((package / "mlc-chat-config.json").read_text())["model_config"]
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "sliding_window", "layer_types", "rms_norm_eps",
            "query_pre_attn_scalar", "final_logit_softcapping", "hidden_activation")
    fields = {k: int(model[k]) if isinstance(model[k], float) and k == "query_pre_attn_scalar" else model[k]
              for k in keys if k in model}  # transformers wants an int there
    # RoPE: transformers' Gemma 3 defaults (global 1e6, local 1e4) are the package's
    config = Gemma3TextConfig(**fields, max_position_embeddings=4096,
                              bos_token_id=2, eos_token_id=1, pad_token_id=0)
    return config


def decode_rate(model, prompt, static: bool, repeats: int) -> float:
    """Median decode tok/s (module docstring)."""
    import torch

    kwargs = {"do_sample": False, "eos_token_id": None, "pad_token_id": 0}
    if static:
        from transformers import CompileConfig

        kwargs.update(cache_implementation="static",
                      compile_config=CompileConfig(fullgraph=True, mode="reduce-overhead"))

    def run(n: int) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = model.generate(prompt, max_new_tokens=n, min_new_tokens=n, **kwargs)
        torch.cuda.synchronize()
        assert out.shape[1] == prompt.shape[1] + n
        return time.perf_counter() - start

    warm = [round(run(NEW_TOKENS), 2) for _ in range(2)] + [round(run(1), 2)]  # the first compiles
    rates = []
    for _ in range(repeats):
        full, one = run(NEW_TOKENS), run(1)
        rates.append((NEW_TOKENS - 1) / (full - one))
    print(f"{'static + compile' if static else 'eager'}: warm-up runs {warm} s", flush=True)
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--context", type=int, nargs="*", default=[128, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch
    import transformers
    from transformers import Gemma3ForCausalLM

    torch.manual_seed(0)
    config = config_from_package(args.package)
    model = Gemma3ForCausalLM(config).to("cuda", torch.bfloat16).eval()
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "transformers": transformers.__version__, "weights": "random (synthetic)", "dtype": "bfloat16",
              "runs": []}
    with torch.inference_mode():
        for n in args.context:
            prompt = torch.randint(1000, 200000, (1, n), device="cuda")
            row = {"prompt_tokens": n}
            for name, static in (("eager", False), ("static_compiled", True)):
                try:
                    row[name + "_decode_tok_s"] = decode_rate(model, prompt, static, args.repeats)
                except Exception as err:  # report and go on: the other peer still counts
                    row[name + "_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
            result["runs"].append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
