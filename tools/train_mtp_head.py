"""Train a DeepSeek-V3-style MTP head (one layer, reused along a draft chain) for a Gemma 3 base by
self-distillation, and save it in transformers' ``MtpModel`` names for ``mlc-mtp build``.

The head is transformers' ``MtpLayer`` (``enorm``, ``hnorm``, ``eh_proj``, a Gemma 3 decoder
layer ``mtp_block``, ``post_norm``) over the frozen base, sharing its embedding and tied head: the
maths of :mod:`pipeline.models.gemma3_mtp.model`.  Anchored at a position ``i`` of a sequence, depth 1
reads ``(h_i, emb(t_{i+1}))`` (``h`` the base's final, normed hidden states) and predicts
``t_{i+2}``; depth ``d > 1`` reads the head's own depth ``d - 1`` output with ``emb(t_{i+d})``
and predicts ``t_{i+d+1}``, attending, as at run time, to the depth-1 entries of positions
``<= i`` and to the deeper entries of its own chain (:func:`chain_mask`).  The loss at depth ``d``
is KL(base || head) against the base's own next-token distribution at position ``i + d``
(self-distillation: the targets are the base's distributions, not the sampled tokens).

Data: the base continues the prompts of :mod:`tools.mtp_prompts` greedily, greedily after a
sampled start, sampled, and (``--long`` training prompts) after a long sampled document, so that
contexts reach 1-2 k tokens; the held-out prompts (kinds and topics the training prompts lack) get
the greedy kinds only.  The token ids of the training split's generated continuations are counted
into ``OUT/token-counts.safetensors`` (the base's own token frequencies, for a reduced drafting
vocabulary).  The report gives the head's top-1 agreement with the base's greedy next-next token
on the held-out prompts' continuations and, for comparison, on 256 training prompts' (per depth,
and chained: all depths up to ``d`` right; anchors whose target is a generated token, all of them
and the first ``--eval-first``), with float weights and rounded as the ``q4f32_1`` and
``qsrcf32`` schemes store them.  ``tools/mtp_acceptance.py`` measures a built package's head with
this project's runtime.

Two steps:

``prepare`` (this project's machine; needs the project and a built base package)::

    python tools/train_mtp_head.py prepare --package dist/gemma3-270m --out .mtp-train \
        [--wheel transformers-5.24.0-py3-none-any.whl --wheel regex-...whl] [--part-mib 45] [--probe-tokens 24]

  writes ``prompts.json`` (token ids, split and kind of every prompt), ``probe.json`` (our
  runtime's greedy tokens and logits on two prompts, which the GPU run checks its base against)
  and ``base.tar`` (the package's weights, ``mlc-chat-config.json`` and optional wheels, for a
  machine whose transformers is older), cut into files ``base.tar.partN`` of ``--part-mib`` MiB,
  small enough to travel one per call.

``train`` (any CUDA machine with torch and transformers >= 5.24, or the CPU for a smoke test)::

    python tools/train_mtp_head.py train --data .mtp-train --out OUT \
        [--layer-type sliding_attention] [--depth 3] [--depth-weights 1,0.5,0.25] \
        [--samples 4] [--sampled-prefix 3] [--new-tokens 256] [--prefix-tokens 32] [--gen-batch 512] \
        [--long 256] [--long-tokens 1024] [--gen-seconds 180] [--train-seconds 300] [--batch-tokens 4096] \
        [--lr 1e-3] [--warmup 50] [--seed 0] [--device cuda] [--reuse-data DATA.json] [--data-out DATA.json] \
        [--max-prompts N] [--init-head EARLIER/mtp.safetensors] [--coverage-of EARLIER/token-counts.safetensors]

  reads ``base.tar.part*`` (or an unpacked ``base/``), rebuilds the base in float32 from the
  package's stored weights (quantized ones decoded: the base the package runs),
  generates the data (sampling seeded by ``--seed``), writes the token counts, trains until
  ``--train-seconds`` have passed (cosine learning rate over that time; a checkpoint every
  ``--save-every`` seconds), evaluates, and writes ``OUT/mtp.safetensors`` (bf16, names
  ``layers.0.*``), ``OUT/mtp-architecture.json`` (for the config's ``mtp.architecture``),
  ``OUT/report.json`` and ``OUT/token-counts.safetensors``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the project: its numpy-only formats
import mtp_prompts  # noqa: E402

from pipeline.quantization.formats import GroupFormat, decode, encode  # noqa: E402

ROUNDED_AS = ("q4f32_1", "qsrcf32")  # schemes whose rounding of the (float) head the report evaluates
TARGET_NAMES = ("mlc-chat-config.json", "tensor-cache.json")
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "uint32": np.uint32, "int32": np.int32, "int8": np.int8}


# --- prepare (here) ---------------------------------------------------------------------------
def prepare(args) -> None:
    """Write prompts, probe and the base archive (parts) into ``args.out``."""
    from tokenizers import Tokenizer

    out, package = Path(args.out), Path(args.package)
    out.mkdir(parents=True, exist_ok=True)
    chat = json.loads((package / "mlc-chat-config.json").read_text())
    tokenizer = Tokenizer.from_file(str(package / "tokenizer.json"))
    bos = chat["bos_token_id"]

    def record(kind: str, text: str, split: str) -> dict:
        return {"ids": [bos] + tokenizer.encode(text, add_special_tokens=False).ids, "split": split, "kind": kind}

    records = [record(kind, text, "train") for kind, text in mtp_prompts.train_prompts()]
    records += [{"ids": ids, "split": "train", "kind": "random"}
                for ids in mtp_prompts.random_prefixes(chat["vocab_size"])]
    records += [record(kind, text, "heldout") for kind, text in mtp_prompts.eval_prompts()]
    (out / "prompts.json").write_text(json.dumps(records))
    (out / "probe.json").write_text(json.dumps(_probe(package, [records[0]["ids"], records[9]["ids"]],
                                                      args.probe_tokens)))
    with tarfile.open(out / "base.tar", "w") as tar:
        for name in TARGET_NAMES:
            tar.add(package / name, arcname=f"base/{name}")
        for shard in sorted(package.glob("params_shard_*.bin")):
            tar.add(shard, arcname=f"base/{shard.name}")
        for wheel in args.wheel or []:
            tar.add(wheel, arcname=f"wheels/{Path(wheel).name}")
    data = (out / "base.tar").read_bytes()
    step = int(args.part_mib * 2**20)
    parts = -(-len(data) // step)
    for k in range(parts):
        (out / f"base.tar.part{k}").write_bytes(data[k * step:(k + 1) * step])
    (out / "base.tar").unlink()
    print(f"prepare: {len(records)} prompts ({sum(r['split'] == 'heldout' for r in records)} held out), "
          f"base archive {len(data) / 2**20:.1f} MiB in {parts} parts under {out}")


def _probe(package: Path, prompts: list[list[int]], new_tokens: int) -> list[dict]:
    """Our runtime's greedy continuation of each prompt and the logits at each of its steps."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.runtime.engine import Engine

    engine = Engine(package)
    probes = []
    for prompt in prompts:
        engine.reset()
        logits = [engine.prefill(prompt)]
        tokens = []
        for _ in range(new_tokens):
            tokens.append(int(np.argmax(logits[-1])))
            logits.append(engine.decode(tokens[-1]))
        probes.append({"prompt": prompt, "tokens": tokens,
                       "top_logits": [float(row.max()) for row in logits[:-1]]})
    return probes


# --- the base (train) --------------------------------------------------------------------------
def unpack(data: Path) -> Path:
    """``data/base`` (the package files), joining and extracting ``base.tar.part*`` when needed;
    wheels in the archive are extracted to ``data/wheels``."""
    if not (data / "base" / "tensor-cache.json").is_file():
        parts = sorted(data.glob("base.tar.part*"), key=lambda p: int(p.name.removeprefix("base.tar.part")))
        if not parts:
            raise SystemExit(f"{data}: no base/ and no base.tar.part* files")
        with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in parts))) as tar:
            tar.extractall(data, filter="data")
    return data / "base"


def read_tensor_cache(directory: Path) -> dict[str, np.ndarray]:
    """The arrays of an MLC ``tensor-cache.json`` + raw shards (numpy, no TVM)."""
    index = json.loads((directory / "tensor-cache.json").read_text())
    arrays = {}
    for shard in index["records"]:
        raw = (directory / shard["dataPath"]).read_bytes()
        for rec in shard["records"]:
            dtype = NUMPY_DTYPES[rec["dtype"]]
            array = np.frombuffer(raw, dtype, count=rec["nbytes"] // np.dtype(dtype).itemsize, offset=rec["byteOffset"])
            arrays[rec["name"]] = array.reshape(rec["shape"])
    return arrays


def stored_formats(directory: Path, quantization: str) -> dict[str, GroupFormat]:
    """Weight name -> the format the package stores it in: ``tensor-cache.json``'s
    ``QuantizedWeights`` / ``QuantFormats`` metadata, or, for packages that predate them, every
    ``.q_weight`` as ``q4f32_1``'s format."""
    from pipeline.quantization import get_scheme

    index = json.loads((directory / "tensor-cache.json").read_text())
    meta = index.get("metadata", {})
    if "QuantizedWeights" in meta:
        fields = ("bits", "group_size", "scale_dtype", "with_min")
        kinds = {name: GroupFormat(name, **{k: record[k] for k in fields})
                 for name, record in meta["QuantFormats"].items()}
        return {name: kinds[kind] for name, kind in meta["QuantizedWeights"].items()}
    fmt = get_scheme(quantization).tensor_format()
    names = [rec["name"] for shard in index["records"] for rec in shard["records"]]
    stems = [n.removesuffix(".q_weight") for n in names if n.endswith(".q_weight")]
    return {} if fmt is None else {f"{stem}.weight": fmt for stem in stems}


# model_config keys (mlc-chat-config.json) that Gemma3TextConfig takes under the same name.
SAME_NAMED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "sliding_window", "layer_types", "rms_norm_eps", "rope_theta",
              "rope_local_base_freq", "final_logit_softcapping", "bos_token_id", "eos_token_id", "pad_token_id")


def hf_text_config(cfg: dict, attn: str = "sdpa"):
    """transformers' ``Gemma3TextConfig`` for our ``model_config`` (mlc-chat-config.json)."""
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(**{key: cfg[key] for key in SAME_NAMED}, attn_implementation=attn,
                            query_pre_attn_scalar=int(cfg["query_pre_attn_scalar"]),
                            max_position_embeddings=cfg["context_window_size"])


def load_base(package: Path, device: str):
    """transformers' ``Gemma3ForCausalLM`` (float32, eval, frozen) on the package's stored weights:
    quantized ones dequantized, RMSNorm multipliers ``1 + w`` turned back into ``w``."""
    import torch
    from transformers import Gemma3ForCausalLM

    chat = json.loads((package / "mlc-chat-config.json").read_text())
    arrays = read_tensor_cache(package)
    formats = stored_formats(package, chat["quantization"])
    state = {}
    for name, fmt in formats.items():
        stem = name.removesuffix(".weight")
        state[name] = torch.as_tensor(decode({s: np.array(arrays.pop(f"{stem}.{s}")) for s in fmt.tensors}, fmt))
    for name, array in arrays.items():
        tensor = torch.as_tensor(np.array(array, np.float32))
        state[name] = tensor - 1.0 if name.endswith("norm.weight") else tensor
    state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model = Gemma3ForCausalLM(hf_text_config(chat["model_config"]))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any("rotary" not in m for m in missing):
        raise SystemExit(f"{package}: weights do not fit Gemma3ForCausalLM: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return model.to(device).eval().requires_grad_(False), chat


def check_probe(base, probes: list[dict], device: str) -> dict:
    """Teacher-force the base on each probe's tokens: top-1 agreement with our runtime's greedy
    tokens and the largest difference of the top logit."""
    import torch

    agree, total, diff = 0, 0, 0.0
    for probe in probes:
        ids = torch.tensor([probe["prompt"] + probe["tokens"][:-1]], device=device)
        with torch.no_grad():
            logits = base(ids).logits[0, len(probe["prompt"]) - 1:].float()
        agree += int((logits.argmax(-1).cpu() == torch.tensor(probe["tokens"])).sum())
        total += len(probe["tokens"])
        diff = max(diff, float((logits.max(-1).values.cpu() - torch.tensor(probe["top_logits"])).abs().max()))
    return {"top1_agreement": agree / total, "max_top_logit_diff": diff, "tokens": total}


# --- data --------------------------------------------------------------------------------------
def generate(base, prompts: list[list[int]], new_tokens: int, batch: int, device: str, sample: bool,
             temperature: float = 1.0, top_p: float = 1.0, eos: tuple[int, ...] = (1, 106)) -> list[list[int]]:
    """Continue every prompt by ``new_tokens`` tokens (greedy or sampled), batched with left
    padding; each returned sequence is prompt + continuation, cut after its first eos."""
    import torch

    out = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        width = max(map(len, chunk))
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(chunk):
            ids[row, width - len(prompt):] = torch.tensor(prompt)
            mask[row, width - len(prompt):] = 1
        kwargs = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if sample else \
            {"do_sample": False}
        with torch.no_grad():
            result = base.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=new_tokens,
                                   pad_token_id=0, **kwargs)
        for row, prompt in enumerate(chunk):
            cont = result[row, width:].tolist()
            cut = next((k + 1 for k, t in enumerate(cont) if t in eos), len(cont))
            out.append(prompt + cont[:cut])
    return out


def make_data(base, records: list[dict], args, log) -> dict[str, list[dict]]:
    """Sequences per split.  Every prompt: one greedy continuation and, within ``--gen-seconds``,
    greedy continuations after a sampled start; training prompts also sampled continuations
    (temperature 0.7 / 1.0, top-p 0.95) and, for ``--long`` of them, a long sampled document
    (``--long-tokens``, temperature 0.8) continued greedily: contexts of 1-2 k tokens."""
    import torch

    torch.manual_seed(args.seed)  # the sampled sequences
    start = time.perf_counter()
    data = {"train": [], "heldout": []}
    train = [r for r in records if r["split"] == "train"]

    def add(kind: str, chosen: list[dict], sequences: list[list[int]], temperature: float = 0.0) -> None:
        for record, seq in zip(chosen, sequences):
            data[record["split"]].append({"kind": kind, "prompt_kind": record.get("kind", ""),
                                          "temperature": temperature, "prompt_len": len(record["ids"]), "ids": seq})
        log(f"data: {kind} (temperature {temperature}): {len(sequences)} sequences, "
            f"{sum(len(s) for s in sequences)} tokens, {time.perf_counter() - start:.0f} s")

    def gen(chosen, prompts, new_tokens, **kwargs):
        return generate(base, prompts or [r["ids"] for r in chosen], new_tokens, args.gen_batch, args.device, **kwargs)

    add("greedy", records, gen(records, None, args.new_tokens, sample=False))
    if args.long and time.perf_counter() - start < args.gen_seconds:
        rng = random.Random(args.seed)
        chosen = rng.sample([r for r in train if r.get("kind") != "random"], min(args.long, len(train)))
        docs = gen(chosen, None, args.long_tokens, sample=True, temperature=0.8, top_p=0.95)
        kept = [(r, d) for r, d in zip(chosen, docs)  # long enough, and not ended by an eos
                if len(d) >= len(r["ids"]) + args.long_tokens // 2 and d[-1] not in (1, 106)]
        add("long-sampled-greedy", [r for r, _ in kept], gen(None, [d for _, d in kept], args.new_tokens, sample=False))
    for k in range(max(args.sampled_prefix, args.samples)):
        if time.perf_counter() - start > args.gen_seconds:
            break
        if k < args.sampled_prefix:
            starts = gen(records, None, args.prefix_tokens, sample=True, temperature=0.9, top_p=0.95)
            add("sampled-prefix-greedy", records,
                gen(records, starts, args.new_tokens - args.prefix_tokens, sample=False))
        if k < args.samples:
            temperature = (0.7, 1.0)[k % 2]
            add("sampled", train, gen(train, None, args.new_tokens, sample=True, temperature=temperature, top_p=0.95),
                temperature)
    return data


def token_counts(data: dict[str, list[dict]], out: Path, base_name: str, log, coverage_of: str | None = None) -> dict:
    """Count the token ids of every generated continuation of the training split (greedy and
    sampled) and write ``out/token-counts.safetensors``: ``ids`` (int32, by count descending, ties
    by id ascending, only ids seen), ``counts`` (int64), metadata ``source``, ``tokens``, ``base``.
    Returns the held-out coverage: the fraction of the held-out split's generated tokens inside
    the top ``N`` ids, for N = 4096, 8192, 16384, 32768 (also under ``coverage_of``, an earlier
    counts file)."""
    from safetensors.numpy import save_file

    def generated(split):
        rows = [np.asarray(s["ids"][s["prompt_len"]:], np.int64) for s in data[split]]
        return np.concatenate(rows or [np.zeros(0, np.int64)])

    tokens = generated("train")
    counts = np.bincount(tokens)
    ids = np.nonzero(counts)[0]
    order = np.lexsort((ids, -counts[ids]))  # count descending, then id ascending
    ids, sorted_counts = ids[order].astype(np.int32), counts[ids[order]].astype(np.int64)
    save_file({"ids": ids, "counts": sorted_counts}, str(out / "token-counts.safetensors"), metadata={
        "source": "tools/train_mtp_head.py: generated continuations (greedy, sampled, greedy after a sampled start, "
                  "long sampled then greedy) of the training prompts of tools/mtp_prompts.py",
        "tokens": str(int(tokens.size)), "base": base_name})
    held = generated("heldout")
    rank = np.full(max(int(held.max(initial=0)) + 1, counts.size), np.iinfo(np.int64).max)  # unseen: never
    rank[ids] = np.arange(ids.size)
    coverage = {str(n): round(float((rank[held] < n).mean()), 4) if held.size else None
                for n in (4096, 8192, 16384, 32768)}
    result = {"train_tokens": int(tokens.size), "distinct_ids": int(ids.size), "heldout_tokens": int(held.size),
              "heldout_coverage_top_n": coverage}
    if coverage_of:  # the same coverage under an earlier run's counts
        from safetensors.numpy import load_file

        earlier = load_file(coverage_of)["ids"]
        rank = np.full(max(int(held.max(initial=0)) + 1, int(earlier.max()) + 1), np.iinfo(np.int64).max)
        rank[earlier] = np.arange(earlier.size)
        result["heldout_coverage_top_n_of_" + Path(coverage_of).name] = {
            str(n): round(float((rank[held] < n).mean()), 4) if held.size else None
            for n in (4096, 8192, 16384, 32768)}
    log(f"token counts: {result}")
    return result


# --- the head ----------------------------------------------------------------------------------
def build_head(base, layer_type: str, use_post_norm: bool = True, hidden_states_first: bool = False, seed: int = 0,
               output_scale: float = 1.0):
    """transformers' ``MtpModel`` with one layer of ``layer_type`` over ``base`` (its embedding,
    head and rotary embedding shared), initialized close to "the base's own next-token prediction":
    ``eh_proj`` passes ``hnorm(h)`` through (identity on the hidden half, small random weights on
    the embedding half), the block's branches are damped (their output norms multiply by 0.1),
    and ``post_norm`` multiplies by ``output_scale`` (the base's typical final hidden-state RMS),
    so that the first logits are the base's at the anchor, not a random head's.
    """
    import torch
    from transformers.modeling_layers import MtpModel

    config = base.config
    extra = {"num_mtp_layers": 1, "mtp_layer_types": [layer_type], "mtp_hidden_states_first": hidden_states_first}
    if not use_post_norm:
        extra["chain_hidden_post_norm"] = False
    for key, value in extra.items():
        setattr(config, key, value)
    checksum = [float(p.detach().double().sum()) for p in base.parameters()]
    try:
        torch.manual_seed(seed)
        head = MtpModel(base, 1)
    finally:
        for key in extra:
            delattr(config, key)
    if checksum != [float(p.detach().double().sum()) for p in base.parameters()]:
        raise RuntimeError("building the MTP head re-initialized weights of the base")
    layer, hidden = head.layers[0], config.hidden_size
    with torch.no_grad():
        for name, param in layer.named_parameters():
            param.copy_(torch.zeros_like(param) if "norm" in name else torch.randn_like(param) * 0.02)
        for norm in (layer.mtp_block.post_attention_layernorm, layer.mtp_block.post_feedforward_layernorm):
            norm.weight.fill_(0.1 - 1.0)  # RMSNorm multiplies by 1 + w
        identity = torch.eye(hidden)
        half = slice(0, hidden) if hidden_states_first else slice(hidden, 2 * hidden)
        layer.eh_proj.weight[:, half] = identity
        if layer.post_norm is not None:
            layer.post_norm.weight.fill_(output_scale - 1.0)
    return head.to(base.device)


def hidden_rms(base, sequences: list[list[int]], device: str) -> float:
    """Mean RMS of the base's final hidden states over ``sequences`` (all positions)."""
    import torch

    ids, lengths = pad(sequences, device)
    with torch.no_grad():
        rms = base.model(input_ids=ids).last_hidden_state.pow(2).mean(-1).sqrt()
    valid = torch.arange(ids.shape[1], device=device)[None] < lengths[:, None]
    return float(rms[valid].mean())


def chain_mask(n: int, depth: int, window: int | None, device=None):
    """Which keys each query sees when the head runs ``depth`` chained steps from every anchor.

    Rows and columns are ``depth * n`` entries, depth-major: entry ``(m, i)`` (``m`` = depth - 1)
    is anchor ``i``'s depth-``m + 1`` step, at position ``i + m``.  Entry ``(m, i)`` sees the
    depth-1 entries of anchors ``a <= i`` (position difference below ``window`` when sliding),
    and the deeper entries ``(m', i)``, ``1 <= m' <= m``, of its own chain: what the drafter's
    cache holds when it drafts (exact entries, then the chain's own).  Bool ``(depth*n, depth*n)``.
    """
    import torch

    m = torch.arange(depth, device=device).repeat_interleave(n)
    i = torch.arange(n, device=device).repeat(depth)
    mq, iq, mk, ik = m[:, None], i[:, None], m[None, :], i[None, :]
    exact = (mk == 0) & (ik <= iq)
    if window is not None:
        exact &= (iq + mq) - ik < window
    own_chain = (mk >= 1) & (ik == iq) & (mk <= mq)
    return exact | own_chain


def chain_forward(head, hidden, ids, depth: int):
    """Run the head ``depth`` chained steps from every anchor of the batch.

    Args:
        head: the ``MtpModel`` of :func:`build_head`.
        hidden: ``(b, t, H)`` base final hidden states.
        ids: ``(b, t)`` token ids (right-padded).

    Returns:
        A list of ``depth`` tensors ``(b, t - 1, H)``: entry ``[d - 1][:, i]`` is the step-``d``
        output of anchor ``i``, whose logits predict ``ids[:, i + d + 1]``.
    """
    import torch
    import torch.nn.functional as F

    layer, n = head.layers[0], ids.shape[1] - 1
    layer_type = head.config.layer_types[0]
    window = head.config.sliding_window if layer_type == "sliding_attention" else None
    embeds = head.embed_tokens(ids)
    inputs_e, inputs_h, outputs = [], [], []
    previous = hidden[:, :n]
    for d in range(1, depth + 1):
        inputs_e.append(F.pad(embeds[:, d:d + n], (0, 0, 0, n - embeds[:, d:d + n].shape[1])))
        inputs_h.append(previous)
        x_e, x_h = torch.cat(inputs_e, 1), torch.cat(inputs_h, 1)
        positions = torch.cat([torch.arange(n, device=ids.device) + m for m in range(d)])[None]
        rope = {"layer_type": layer_type} if head.has_per_layer_rope else {}
        pe = head.rotary_emb(x_e, position_ids=positions, **rope)
        mask = chain_mask(n, d, window, ids.device)[None, None]
        if head.config._attn_implementation == "eager":  # additive there
            mask = torch.zeros(mask.shape, device=ids.device).masked_fill(~mask, torch.finfo(torch.float32).min)
        out = layer(x_e, x_h, position_embeddings=pe, attention_mask=mask, position_ids=positions, cache=None)
        previous = out[:, (d - 1) * n:]
        outputs.append(previous)
    return outputs


def head_state(head) -> dict:
    """The head's own tensors in ``MtpModel`` names (``layers.0.*``), shared ones left out."""
    return {k: v for k, v in head.state_dict().items() if k.startswith("layers.")}


def stored_round_trip(head, fmt: GroupFormat) -> dict:
    """The head's state with every 2-D weight rounded as a package stores a float (bf16) weight
    in ``fmt`` (:mod:`pipeline.quantization.formats`); for evaluation only."""
    import torch

    state = {}
    for name, value in head_state(head).items():
        value = value.detach().cpu().to(torch.bfloat16).float()  # as saved
        if value.ndim == 2 and value.shape[1] % fmt.group_size == 0:
            value = torch.as_tensor(decode(encode(value.numpy(), fmt), fmt))
        state[name] = value
    return state


# --- training ----------------------------------------------------------------------------------
def batches(sequences: list[list[int]], tokens: int, rng: random.Random, device: str):
    """Endless random batches ``(ids (b, t), lengths (b,))``, right-padded with 0, of at most
    ``tokens`` padded tokens each (sequences of similar length batched together: each shuffled
    group of 256 is sorted by length, cut into batches, and the batches shuffled)."""
    while True:
        order = list(range(len(sequences)))
        rng.shuffle(order)
        chunks = []
        for start in range(0, len(order), 256):
            group = sorted(order[start:start + 256], key=lambda k: len(sequences[k]))
            batch = []
            for k in group:
                if batch and (len(batch) + 1) * len(sequences[k]) > tokens:
                    chunks.append(batch)
                    batch = []
                batch.append(k)
            chunks.append(batch)
        rng.shuffle(chunks)
        for batch in chunks:
            yield pad([sequences[k][:tokens] for k in batch], device)


def pad(sequences: list[list[int]], device: str):
    """``(ids (b, t) long, lengths (b,) long)`` of right-padded sequences."""
    import torch

    width = max(map(len, sequences))
    ids = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.tensor(seq)
    return ids.to(device), torch.tensor([len(s) for s in sequences], device=device)


def step_losses(base, head, ids, lengths, depth: int, autocast: bool):
    """Per depth: mean KL(base || head) over valid anchors, top-1 agreement count, valid count."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        hidden = base.model(input_ids=ids).last_hidden_state
        teacher = F.log_softmax(base.lm_head(hidden).float(), dim=-1)
    n = ids.shape[1] - 1
    anchors = torch.arange(n, device=ids.device)[None]
    results = []
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=autocast):
        outputs = chain_forward(head, hidden, ids, depth)
        for d, out in enumerate(outputs, 1):
            valid = anchors + d <= lengths[:, None] - 1  # teacher row i + d exists
            target = F.pad(teacher[:, d:d + n], (0, 0, 0, max(0, d + n - teacher.shape[1])))[:, :n]
            student = F.log_softmax(head.shared_head(out).float(), dim=-1)
            kl = F.kl_div(student, target, log_target=True, reduction="none").sum(-1)
            agree = (student.argmax(-1) == target.argmax(-1)) & valid
            results.append(((kl * valid).sum() / valid.sum().clamp(min=1), int(agree.sum()), int(valid.sum())))
    return results


def train(args) -> None:
    """The ``train`` step (see the module docstring)."""
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = open(out / "train.log", "a", encoding="utf-8")
    t0 = time.perf_counter()

    def log(message: str) -> None:
        line = f"[{time.perf_counter() - t0:7.1f} s] {message}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    data_dir = Path(args.data)
    base, chat = load_base(unpack(data_dir), args.device)
    log(f"base: {chat['model_type']} {chat['quantization']} on {args.device}")
    report = {"args": vars(args)}
    probe_file = data_dir / "probe.json"
    if probe_file.is_file():
        report["probe"] = check_probe(base, json.loads(probe_file.read_text()), args.device)
        log(f"probe against our runtime: {report['probe']}")
        if report["probe"]["top1_agreement"] < args.min_probe_agreement:
            raise SystemExit("the rebuilt base disagrees with our runtime; stopping")
    records = json.loads((data_dir / "prompts.json").read_text())
    if args.max_prompts:
        records = records[:args.max_prompts]
    if args.reuse_data:
        data = json.loads(Path(args.reuse_data).read_text())
        log(f"data: reused {args.reuse_data}")
    else:
        data = make_data(base, records, args, log)
    report["data"] = {split: {"sequences": len(seqs), "tokens": sum(len(s["ids"]) for s in seqs),
                              "by_kind": {kind: sum(s["kind"] == kind for s in seqs) for kind in
                                          sorted({s["kind"] for s in seqs})}}
                      for split, seqs in data.items()}
    if args.data_out:
        Path(args.data_out).write_text(json.dumps(data))
    report["token_counts"] = token_counts(data, out, f"{args.base_name} {chat['quantization']}", log,
                                          args.coverage_of)
    (out / "report.json").write_text(json.dumps(report, indent=1))

    torch.backends.cuda.matmul.allow_tf32 = True  # the data came from the float32 base; TF32 for the teacher
    weights = [float(w) for w in args.depth_weights.split(",")][:args.depth]
    scale = hidden_rms(base, [s["ids"] for s in data["train"][:16]], args.device)
    head = build_head(base, args.layer_type, seed=args.seed, output_scale=scale)
    report["init"] = {"post_norm_scale": scale}
    if args.init_head:  # continue from a saved head (its bf16 weights) instead of the identity-like start
        from safetensors.torch import load_file

        saved = {k: v.float() for k, v in load_file(args.init_head).items()}
        odd = sorted(set(saved) ^ set(head_state(head)))
        if odd:
            raise SystemExit(f"{args.init_head}: tensors {odd} do not fit the head")
        head.load_state_dict(saved, strict=False)
        report["init"]["from"] = args.init_head
    params = [p for p in head.layers.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    rng = random.Random(args.seed)
    stream = batches([s["ids"] for s in data["train"]], args.batch_tokens, rng, args.device)
    autocast = args.device.startswith("cuda")
    start, step, history = time.perf_counter(), 0, []
    last_save = start
    while time.perf_counter() - start < args.train_seconds:
        progress = (time.perf_counter() - start) / args.train_seconds
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids, lengths = next(stream)
        results = step_losses(base, head, ids, lengths, args.depth, autocast)
        loss = sum(w * r[0] for w, r in zip(weights, results))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        if step % args.log_every == 0 or step == 1:
            row = {"step": step, "seconds": round(time.perf_counter() - start, 1), "lr": lr,
                   "loss": float(loss.detach()), "kl": [round(float(r[0]), 4) for r in results],
                   "top1": [round(r[1] / max(r[2], 1), 4) for r in results], "batch": list(ids.shape)}
            if args.device.startswith("cuda"):
                row["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
            history.append(row)
            log(f"train: {row}")
        if time.perf_counter() - last_save > args.save_every:  # a head survives a run cut short
            last_save = time.perf_counter()
            report["train"] = {"steps": step, "seconds": last_save - start, "history": history, "partial": True}
            save(head, args, out, report)
            head.train()
    report["train"] = {"steps": step, "seconds": time.perf_counter() - start, "history": history,
                       "tokens_per_step": args.batch_tokens, "depth_weights": weights}
    head.eval()
    save(head, args, out, report)  # kept if the evaluation does not finish
    report["heldout"] = evaluate(base, head, eval_groups(data, args.seed), args)
    log(f"held-out: {json.dumps(report['heldout'])}")
    save(head, args, out, report)
    log(f"saved {out / 'mtp.safetensors'}")


def eval_groups(data: dict[str, list[dict]], seed: int, train_sample: int = 256) -> dict[str, list[dict]]:
    """The sequence groups :func:`evaluate` reports: the held-out prompts' greedy continuations
    (all, new kinds, new topics, code) and greedy after a sampled start, and for comparison the
    greedy continuations of ``train_sample`` training prompts (seen in training)."""
    held = data["heldout"]
    greedy = [s for s in held if s["kind"] == "greedy"]
    seen = [s for s in data["train"] if s["kind"] == "greedy"]
    seen = random.Random(seed).sample(seen, min(train_sample, len(seen)))
    return {"heldout/greedy": greedy,
            "heldout/greedy/new-kind": [s for s in greedy if s.get("prompt_kind", "").startswith("new-kind/")],
            "heldout/greedy/new-topic": [s for s in greedy if s.get("prompt_kind", "").startswith("new-topic/")],
            "heldout/greedy/code": [s for s in greedy if "code" in s.get("prompt_kind", "")],
            "heldout/sampled-prefix-greedy": [s for s in held if s["kind"] == "sampled-prefix-greedy"],
            "train-prompts/greedy": seen,
            "train-prompts/greedy/code": [s for s in seen if "code" in s.get("prompt_kind", "")]}


def evaluate(base, head, groups: dict[str, list[dict]], args) -> dict:
    """Top-1 agreement of the head with the base's greedy choice per group of sequences, over the
    anchors whose targets are generated tokens (all of them, and the first ``--eval-first``): per
    depth, and chained (every depth up to ``d`` right), with float weights and rounded as each
    scheme of :data:`ROUNDED_AS` stores them."""
    import torch

    from pipeline.quantization import get_scheme

    results = {}
    float_state = {k: v.clone() for k, v in head_state(head).items()}
    rounded = {f"{name}-rounded": stored_round_trip(head, get_scheme(name).tensor_format()) for name in ROUNDED_AS}
    for variant, state in (("float", float_state), *rounded.items()):
        head.load_state_dict(state, strict=False)
        for group, chosen in groups.items():
            if not chosen or (variant != "float" and group.count("/") > 1):
                continue
            for window, limit in (("generated", 0), (f"first{args.eval_first}", args.eval_first)):
                per_depth, chained, counts, kl = (np.zeros(args.depth) for _ in range(4))
                for start in range(0, len(chosen), args.batch):
                    batch = chosen[start:start + args.batch]
                    ids, lengths = pad([s["ids"] for s in batch], args.device)
                    prompt_lens = torch.tensor([s["prompt_len"] for s in batch], device=args.device)
                    with torch.no_grad():
                        agree_all, valid_all, kls = _agreement(base, head, ids, lengths, args.depth, prompt_lens, limit)
                    for d in range(args.depth):
                        per_depth[d] += float(agree_all[d].sum())
                        chained[d] += float(torch.stack(agree_all[:d + 1]).all(0)[valid_all[d]].sum())
                        counts[d] += float(valid_all[d].sum())
                        kl[d] += kls[d]
                counts = np.maximum(counts, 1)
                results[f"{variant}/{group}/{window}"] = {
                    "sequences": len(chosen), "anchors": counts.tolist(),
                    "top1": (per_depth / counts).round(4).tolist(),
                    "chained": (chained / counts).round(4).tolist(), "kl": (kl / counts).round(4).tolist()}
    head.load_state_dict(float_state, strict=False)
    return results


def _agreement(base, head, ids, lengths, depth: int, prompt_lens=None, limit: int = 0):
    """Per depth: bool ``(b, t - 1)`` top-1 agreement (false where invalid), validity, summed KL.
    With ``prompt_lens``, only anchors whose target is a generated token are valid (with
    ``limit``, one of the first ``limit`` generated tokens)."""
    import torch
    import torch.nn.functional as F

    hidden = base.model(input_ids=ids).last_hidden_state
    teacher = base.lm_head(hidden).float()
    n = ids.shape[1] - 1
    anchors = torch.arange(n, device=ids.device)[None]
    agree, valid, kls = [], [], []
    for d, out in enumerate(chain_forward(head, hidden, ids, depth), 1):
        ok = anchors + d <= lengths[:, None] - 1
        if prompt_lens is not None:  # the target of anchor i at depth d is token i + d + 1
            ok &= anchors + d + 1 >= prompt_lens[:, None]
            if limit:
                ok &= anchors + d + 1 < prompt_lens[:, None] + limit
        target = F.pad(teacher[:, d:d + n], (0, 0, 0, max(0, d + n - teacher.shape[1])))[:, :n]
        student = head.shared_head(out).float()
        kl = F.kl_div(F.log_softmax(student, -1), F.log_softmax(target, -1), log_target=True, reduction="none").sum(-1)
        agree.append((student.argmax(-1) == target.argmax(-1)) & ok)
        valid.append(ok)
        kls.append(float((kl * ok).sum()))
    return agree, valid, kls


def save(head, args, out: Path, report: dict) -> None:
    """Write the weights (bf16), the architecture file and the report."""
    import torch
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.bfloat16).contiguous().cpu() for k, v in head_state(head).items()}
    architecture = {"layer_type": args.layer_type, "use_post_norm": True, "hidden_states_first": False}
    save_file(state, str(out / "mtp.safetensors"), metadata={k: json.dumps(v) for k, v in architecture.items()})
    (out / "mtp-architecture.json").write_text(json.dumps(
        {"_comment": "MTP head trained by tools/train_mtp_head.py (pipeline.models.gemma3_mtp.config.MTPConfig fields)",
         **architecture}, indent=2) + "\n")
    (out / "report.json").write_text(json.dumps(report, indent=1))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="prompts, probe and base archive (this project's machine)")
    p.add_argument("--package", required=True, help="built base package (mlc-mtp build)")
    p.add_argument("--out", required=True, help="directory to write (carried to the GPU machine)")
    p.add_argument("--wheel", action="append", help="a wheel to ship inside the archive (repeatable)")
    p.add_argument("--part-mib", type=float, default=45, help="size of each archive part (MiB)")
    p.add_argument("--probe-tokens", type=int, default=24, help="greedy tokens per probe prompt")
    t = sub.add_parser("train", help="generate data, train, evaluate, save (CUDA machine)")
    t.add_argument("--data", required=True, help="the directory prepare wrote")
    t.add_argument("--out", required=True, help="directory for weights, report and log")
    t.add_argument("--device", default="cuda")
    t.add_argument("--layer-type", default="sliding_attention", choices=["sliding_attention", "full_attention"])
    t.add_argument("--depth", type=int, default=3, help="chained steps trained per anchor")
    t.add_argument("--depth-weights", default="1,0.5,0.25", help="loss weight per depth")
    t.add_argument("--new-tokens", type=int, default=256, help="tokens generated per sequence")
    t.add_argument("--prefix-tokens", type=int, default=32, help="sampled tokens before a greedy continuation")
    t.add_argument("--sampled-prefix", type=int, default=3, help="sampled-then-greedy sequences per prompt")
    t.add_argument("--samples", type=int, default=4, help="sampled sequences per prompt (t=0.7 and 1.0, top-p 0.95)")
    t.add_argument("--gen-batch", type=int, default=512, help="sequences per generate call")
    t.add_argument("--gen-seconds", type=float, default=180, help="start no generation round after this")
    t.add_argument("--train-seconds", type=float, default=300, help="training time (cosine schedule over it)")
    t.add_argument("--batch-tokens", type=int, default=4096, help="padded tokens per training step")
    t.add_argument("--batch", type=int, default=16, help="sequences per evaluation batch")
    t.add_argument("--long", type=int, default=256, help="training prompts that get a long sampled document")
    t.add_argument("--long-tokens", type=int, default=1024, help="tokens of each long sampled document")
    t.add_argument("--data-out", help="also write the generated data (JSON) here")
    t.add_argument("--coverage-of", help="an earlier token-counts.safetensors: report held-out coverage under it too")
    t.add_argument("--init-head", help="an mtp.safetensors this script saved: train on from its weights")
    t.add_argument("--base-name", default="gemma3-270m", help="the base's name in token-counts' metadata")
    t.add_argument("--save-every", type=float, default=90, help="seconds between checkpoints while training")
    t.add_argument("--eval-first", type=int, default=64, help="the evaluation's second window: first N generated")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--warmup", type=int, default=50, help="warm-up steps")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--log-every", type=int, default=50)
    t.add_argument("--max-prompts", type=int, default=0, help="use only the first N prompts (0: all)")
    t.add_argument("--reuse-data", help="a data.json of an earlier run: train on it instead of generating")
    t.add_argument("--min-probe-agreement", type=float, default=0.8,
                   help="stop when the rebuilt base agrees less with our runtime's probe")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    args = _parser().parse_args(argv)
    if args.command == "prepare":
        prepare(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
