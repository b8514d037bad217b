"""The text report of a dry run (:func:`format_dry_run`): settings, a parameter table per model,
totals and KV cache figures, from the plan of :mod:`.plan`."""

from __future__ import annotations

import re

from ..models.kv_layout import KVLayer
from .plan import DryRun, KVCache, ModelPlan, Parameter

LAYER_NAME = re.compile(r"^(?P<prefix>.*?layers)\.(?P<index>\d+)\.(?P<rest>.+)$")


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.1f} MiB"


def _count(n: int) -> str:
    return f"{n / 1e9:.3f}B" if n >= 10**9 else f"{n / 1e6:.2f}M" if n >= 10**6 else f"{n:,}"


def _ranges(indices: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                      for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in [header, *rows]]


def _stored(p: Parameter) -> str:
    return " + ".join(f"{dtype}[{','.join(map(str, shape))}]" for _, shape, dtype in p.stored)


def _row(name: str, p: Parameter, n: int) -> list[str]:
    return [name, "x".join(map(str, p.shape)), _stored(p), str(n), _count(n * p.count), _mib(n * p.nbytes)]


def _layer_label(config, indices: list[int]) -> str:
    types = getattr(config, "layer_types", None)
    kinds = sorted({types[i].removesuffix("_attention") for i in indices}) if types else []
    modes = config.kv_sharing_modes() if hasattr(config, "kv_sharing_modes") else []
    shared = " with shared K/V" if modes and all(modes[i] == "reuse" for i in indices) else ""
    return f"{len(indices)} layer{'s' * (len(indices) > 1)}" + (f": {'/'.join(kinds)}{shared}" if kinds else "")


def _parameter_rows(plan: ModelPlan, verbose: bool) -> list[list[str]]:
    """One row per parameter (``verbose``), or per parameter of each group of layers that have
    the same parameters, shapes and stored forms."""
    if verbose:
        return [_row(p.name, p, 1) for p in plan.parameters]
    layers: dict[tuple[str, int], list[Parameter]] = {}
    rest_of: dict[str, str] = {}  # a layer parameter's name after ``layers.N.``
    for p in plan.parameters:
        match = LAYER_NAME.match(p.name)
        if match:
            layers.setdefault((match["prefix"], int(match["index"])), []).append(p)
            rest_of[p.name] = match["rest"]
    groups: dict[tuple, list[int]] = {}
    for (prefix, index), params in layers.items():
        signature = (prefix, tuple((rest_of[p.name], p.shape, _stored(p)) for p in params))
        groups.setdefault(signature, []).append(index)
    first_of = {(sig[0], indices[0]): indices for sig, indices in groups.items()}
    rows = []
    for p in plan.parameters:
        match = LAYER_NAME.match(p.name)
        if not match:
            rows.append(_row(p.name, p, 1))
            continue
        indices = first_of.get((match["prefix"], int(match["index"])))
        if indices is None:
            continue
        if p is layers[(match["prefix"], indices[0])][0]:
            rows.append([f"{match['prefix']}.{{{_ranges(indices)}}}  ({_layer_label(plan.config, indices)})",
                         "", "", "", "", ""])
        rows.append(_row(f"  .{match['rest']}", p, len(indices)))
    return rows


def _kv_lines(cache: KVCache | None) -> list[str]:
    if cache is None:
        return ["  KV cache: none of its own (its layers read the base model's K/V)"]
    groups: dict[tuple, list[KVLayer]] = {}
    for layer in cache.layers:
        groups.setdefault((layer.kind, layer.kv_heads, layer.head_dim, layer.window, layer.stores), []).append(layer)
    rows = [[_ranges([layer.index for layer in ls]), kind, f"{heads} x {dim}",
             str(min(window or cache.tokens, cache.tokens)) if stores else "0 (shared)",
             _mib(cache.allocated(ls)), _mib(cache.unpadded(ls)), _mib(cache.minimum(ls))]
            for (kind, heads, dim, window, stores), ls in groups.items()]
    rows.append(["all", "", "", "", _mib(cache.allocated()), _mib(cache.unpadded()), _mib(cache.minimum())])
    head = (f"  KV cache, {cache.dtype}, {cache.tokens} tokens; every slot padded to {cache.slot_heads} KV heads "
            f"x head_dim {cache.slot_head_dim}:")
    return [head, *("    " + line for line in _table(
        ["layers", "kind", "KV heads x head_dim", "tokens kept", "allocated", "unpadded", "minimum"], rows,
        {3, 4, 5, 6}))]


def _model_lines(plan: ModelPlan, verbose: bool) -> list[str]:
    c = plan.config
    size = getattr(c, "base", c)
    lines = [f"{plan.role}: {plan.family}, architecture from {plan.origin}",
             f"  hidden {size.hidden_size}, vocabulary {size.vocab_size}, context window {size.context_window_size} "
             f"tokens, {len(plan.parameters)} parameters"]
    lines += ["  " + line for line in _table(["parameter", "shape", "stored as", "n", "values", "stored"],
                                             _parameter_rows(plan, verbose), {3, 4, 5})]
    bits = 8 * plan.nbytes / plan.count
    lines.append(f"  total: {_count(plan.count)} parameters ({plan.count:,}), {_mib(plan.nbytes)} stored "
                 f"({bits:.2f} bits per parameter)")
    return lines + _kv_lines(plan.kv_cache)


def format_dry_run(run: DryRun, verbose: bool = False) -> str:
    """The dry run as text: settings, a parameter table per model (every parameter when
    ``verbose``, else one block per group of identical layers), totals and KV cache figures."""
    s = run.scheme
    if s.keeps_source:
        form = "each weight in the format its source's type keeps exactly, listed per parameter"
    else:
        form = f"{s.bits}-bit groups of {s.group_size}, {s.model_dtype} scales" if s.quantized else "unquantized"
    lines = [f"dry run of {run.config.path}: nothing read from the weights, compiled or written",
             f"quantization {s.name} ({form}, {s.model_dtype} activations); targets {', '.join(run.targets)}; "
             f"output {run.output} (not written)", ""]
    plans = [run.base] + ([run.drafter] if run.drafter else [])
    for plan in plans:
        lines += _model_lines(plan, verbose) + [""]
    weights = sum(p.nbytes for p in plans)
    cache = sum(p.kv_cache.allocated() for p in plans if p.kv_cache)
    lines.append(f"memory estimate: weights {_mib(weights)} + KV cache {_mib(cache)} (allocated) = "
                 f"{_mib(weights + cache)}, before activations and the runtime")
    return "\n".join(lines)
