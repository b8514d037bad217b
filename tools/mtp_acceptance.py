"""Acceptance of a package's MTP head measured with this project's runtime, per prompt, two ways.

1. **Per step** (what speculation gets): greedy speculative decoding with the package's settings
   (draft length, adaptive policy); of the steps that drafted a token at position ``k``, the
   fraction whose verify pass accepted it (:class:`pipeline.runtime.speculative.SpeculativeStats`).
2. **Per token** (what ``tools/train_mtp_head.py`` reports offline): along the same greedy
   continuation, the head's depth-1 draft at every position ``j`` (exact entry ``(h_j, t_{j+1})``)
   against the base's greedy token ``t_{j+2}``, teacher-forced through the drafter's own cache.

Per-step acceptance weights hard positions more than per-token agreement does: a run of easy
tokens is consumed by one step, a run of hard ones costs a step each.

::

    python tools/mtp_acceptance.py dist/gemma3-270m-mtp [--new-tokens 64] [--set test|train|heldout|all]
        [--prompt TEXT ...] [--json OUT.json] [--base OTHER_PACKAGE]

``--set test``: the prompts of ``tests/runtime/test_mtp_real.py`` (default); ``train`` / ``eval``:
``--limit`` prompts spread over :mod:`tools.mtp_prompts`' training or held-out set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
import mtp_prompts  # noqa: E402

TEST_PROMPTS = ["A good friend is someone who", "The planet Mars has two small moons,", "def quicksort(items):\n",
                "Here is how to plant a tree:\n1.",
                "<start_of_turn>user\nWhat is the tallest mountain in the world?<end_of_turn>\n<start_of_turn>model\n"]


def per_token_agreement(engine, drafter, tokens: list[int], start: int) -> tuple[int, int]:
    """Depth-1 agreement along ``tokens`` (the whole sequence, prompt first) for anchors
    ``j >= start - 1`` whose target ``t_{j+2}`` is a generated token: (agreeing, anchors).
    Leaves the engine and drafter reset."""
    import tvm

    from pipeline.runtime.drafters.mtp_head import MTPDraftChain

    engine.reset()
    engine.prefill(tokens[:-1])
    hidden = drafter.context.hidden_states(0, len(tokens) - 1)
    chain: MTPDraftChain = drafter.chain
    chain.reset()
    outputs = chain.accept(hidden, tokens[1:])
    agree = total = 0
    for j in range(max(0, start - 1), len(tokens) - 2):
        row = tvm.runtime.tensor(np.ascontiguousarray(outputs[j:j + 1], dtype=chain.dtype), engine.device)
        best = int(np.argmax(engine.vm["get_logits"](row, engine.params).numpy()[0]))
        agree += int(best == tokens[j + 2])
        total += 1
    engine.reset()
    chain.reset()
    drafter.seen = []
    return agree, total


def measure(package: Path, texts: list[str], new_tokens: int, base: Path | None = None) -> list[dict]:
    """Per prompt: step acceptance per draft position, tokens per step, per-token depth-1 agreement.
    With ``base``, the engine runs that package's base model under ``package``'s drafter."""
    from pipeline.runtime.drafters import draft_length_policy, drafter_files, package_speculative
    from pipeline.runtime.drafters.mtp_head import MTPHeadDrafter
    from pipeline.runtime.engine import Engine
    from pipeline.runtime.sampling import Sampler
    from pipeline.runtime.speculative import SpeculativeStats, speculative_generate

    engine = Engine(base or package)
    settings = package_speculative(package, Engine(package).runtime_config)
    drafter = MTPHeadDrafter(engine, *drafter_files(package, settings))
    rows = []
    for text in texts:
        ids = [engine.chat_config["bos_token_id"]] + engine.tokenizer.encode(text, add_special_tokens=False).ids
        stats = SpeculativeStats()
        out = list(speculative_generate(engine, ids, new_tokens, Sampler(0.0, 1.0), drafter,
                                        draft_length_policy(settings), stats=stats))
        agree, total = per_token_agreement(engine, drafter, ids + out, len(ids))
        rows.append({"prompt": text, "ids": ids, "tokens": out, "steps": stats.steps, "accepted_at": stats.accepted_at,
                     "proposed_at": stats.proposed_at, "tokens_per_step": stats.tokens_per_step,
                     "per_token_agree": agree, "per_token_total": total})
        rate = stats.acceptance_rate()
        print(f"{json.dumps(text)[1:-1][:40]:<40} step acc 1/2/3 "
              + " / ".join(f"{r:.2f}" for r in rate[:3])
              + f" ({stats.accepted_at[0]}/{stats.proposed_at[0]}), {stats.tokens_per_step:.2f} tok/step, "
              f"per-token depth 1 {agree / max(total, 1):.3f} ({agree}/{total})", flush=True)
    acc = sum(r["accepted_at"][0] for r in rows)
    prop = sum(r["proposed_at"][0] for r in rows)
    agree = sum(r["per_token_agree"] for r in rows)
    total = sum(r["per_token_total"] for r in rows)
    print(f"ALL: position-1 step acceptance {acc / prop:.3f} ({acc}/{prop}); per-token depth-1 agreement "
          f"{agree / total:.3f} ({agree}/{total})")
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--set", default="test", choices=["test", "train", "eval"])
    parser.add_argument("--limit", type=int, default=8, help="prompts taken from the train or eval set")
    parser.add_argument("--prompt", action="append", help="a prompt (repeatable; replaces --set)")
    parser.add_argument("--json", type=Path, help="write the per-prompt rows here")
    parser.add_argument("--base", type=Path, help="run this package's base model under PACKAGE's drafter")
    args = parser.parse_args(argv)
    if args.prompt:
        texts = args.prompt
    elif args.set == "test":
        texts = TEST_PROMPTS
    else:
        texts = [t for _, t in (mtp_prompts.eval_prompts() if args.set == "eval" else mtp_prompts.train_prompts())]
        step = max(1, len(texts) // args.limit)
        texts = texts[::step][:args.limit]
    rows = measure(args.package, texts, args.new_tokens, args.base)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
