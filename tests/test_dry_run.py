"""``mlc-mtp build CONFIG --dry-run`` on the released Gemma 4 configs, without their weights.

Parameter counts are computed here from the architecture files' fields with formulas of this
test's own, compared with the dry run exactly and with the sizes Google publishes within stated
tolerances; KV cache bytes likewise; bad architecture fields end with one clear line.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.dry_run import dry_run
from pipeline.errors import PipelineError
from pipeline.models.importer import config_from_gguf, expected_shapes
from pipeline.models.registry import get_family
from pipeline.sources.gguf_file import GGUFSource
from tests.helpers.gguf_files import write_gguf

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# Published sizes (Gemma 4 model card and huggingface.co/blog/gemma4; drafters: their model cards
# as quoted in the sources named in configs/arch/*-assistant.json, the LiteRT one by the
# SeatownSin/gemma-4-E4B-mtp-drafter card).  E2B/E4B totals include a ~150M vision and a ~300M
# audio encoder (model card), which our text model lacks; the 26B-A4B and 31B totals equal their
# text model's arithmetic, so no encoder is added for them.  Tolerance: the published figures
# have two or three significant digits (3%); "~0.4B" / "~0.5B" have one (10%).
PUBLISHED = {
    "gemma4-e2b-assistant": dict(total=5.1e9, effective=2.3e9, encoders=0.45e9, drafter=78e6, drafter_tol=0.02),
    "gemma4-e4b-litert-mtp": dict(total=8e9, effective=4.5e9, encoders=0.45e9, drafter=78e6, drafter_tol=0.02),
    "gemma4-26b-a4b-assistant": dict(total=25.2e9, active=3.8e9, encoders=0, drafter=0.4e9, drafter_tol=0.1),
    "gemma4-31b-assistant": dict(total=30.7e9, encoders=0, drafter=0.5e9, drafter_tol=0.1),
}
TOLERANCE = 0.03


def text_counts(t: dict) -> Counter:
    """Values of a Gemma 4 text model by kind, from its ``text_config`` fields.

    ``embeddings``: token and per-layer embedding tables; ``matrices``: projections; ``vectors``:
    norms, layer scalars and router scales; ``experts``: routed expert weights.
    """
    h, layers, heads = t["hidden_size"], t["num_hidden_layers"], t["num_attention_heads"]
    ple = t.get("hidden_size_per_layer_input") or 0
    first_shared = layers - (t.get("num_kv_shared_layers") or 0)
    k_eq_v = t.get("attention_k_eq_v", False)
    n = Counter(embeddings=t["vocab_size"] * h + (t["vocab_size_per_layer_input"] * layers * ple if ple else 0))
    for i, kind in enumerate(t["layer_types"]):
        full = kind == "full_attention"
        d = t["global_head_dim"] if full else t["head_dim"]
        kv = t["num_global_key_value_heads"] if full and k_eq_v else t["num_key_value_heads"]
        n["matrices"] += 2 * h * heads * d  # q_proj, o_proj
        n["vectors"] += d + 4 * h + 1  # q_norm, four layer norms, layer_scalar
        if i < first_shared:
            n["matrices"] += h * kv * d * (1 if full and k_eq_v else 2)  # k_proj (and v_proj)
            n["vectors"] += d  # k_norm
        wide = 2 if t.get("use_double_wide_mlp") and i >= first_shared else 1
        n["matrices"] += 3 * h * t["intermediate_size"] * wide
        if t.get("enable_moe_block"):
            e, m = t["num_experts"], t["moe_intermediate_size"]
            n["matrices"] += h * e  # router projection
            n["vectors"] += h + e + 3 * h  # router scale, per-expert scale, three more norms
            n["experts"] += e * 3 * h * m
        if ple:
            n["matrices"] += 2 * h * ple
            n["vectors"] += h
    n["vectors"] += h  # final norm
    if ple:
        n["matrices"] += h * layers * ple
        n["vectors"] += ple
    return n


def drafter_counts(a: dict) -> Counter:
    """Values of a gemma4_assistant drafter by kind (as :func:`text_counts`; ``index``: the
    vocabulary permutation of the centroid head)."""
    t = a["text_config"]
    h, heads, b = t["hidden_size"], t["num_attention_heads"], a["backbone_hidden_size"]
    n = Counter(embeddings=t["vocab_size"] * h, matrices=3 * b * h, vectors=h)  # pre/post projection, final norm
    for kind in t["layer_types"]:
        d = t["global_head_dim"] if kind == "full_attention" else t["head_dim"]
        n["matrices"] += 2 * h * heads * d + 3 * h * t["intermediate_size"]
        n["vectors"] += d + 4 * h + 1
    if a.get("use_ordered_embeddings"):
        n["matrices"] += h * a["num_centroids"]
        n["index"] += t["vocab_size"]
    return n


def stored_bytes(n: Counter, dtype: str) -> int:
    """4-bit groups of 32 (half a byte per value plus one scale per 32) for embeddings, matrices
    and expert weights; ``dtype`` for the rest; int32 for index tables."""
    size = np.dtype(dtype).itemsize
    return int((n["embeddings"] + n["matrices"] + n["experts"]) * (0.5 + size / 32) + n["vectors"] * size
               + n["index"] * 4)


def kv_bytes(t: dict, tokens: int, dtype: str) -> tuple[int, int, int]:
    """(allocated, unpadded, minimum) KV cache bytes of a Gemma 4 text model (see pipeline.dry_run)."""
    size = 2 * np.dtype(dtype).itemsize
    k_eq_v, window = t.get("attention_k_eq_v", False), t["sliding_window"]
    first_shared = t["num_hidden_layers"] - (t.get("num_kv_shared_layers") or 0)
    shapes = [(t["num_global_key_value_heads"] if kind == "full_attention" and k_eq_v else t["num_key_value_heads"],
               t["global_head_dim"] if kind == "full_attention" else t["head_dim"], kind) for kind in t["layer_types"]]
    slot = max(s[0] for s in shapes) * max(s[1] for s in shapes)
    allocated = len(shapes) * slot * tokens * size
    unpadded = sum(kv * d * tokens * size for kv, d, _ in shapes)
    minimum = sum(kv * d * (window if kind == "sliding_attention" else tokens) * size
                  for i, (kv, d, kind) in enumerate(shapes) if i < first_shared)
    return allocated, unpadded, minimum


def architecture(config, section: str) -> dict:
    return json.loads((config.architecture if section == "model" else config.mtp_architecture).path.read_text())


@pytest.fixture(scope="module")
def runs():
    return {name: dry_run(load_config(CONFIGS / f"{name}.yaml")) for name in PUBLISHED}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_released_config_counts_match_the_architecture_and_the_published_sizes(runs, name):
    run, published = runs[name], PUBLISHED[name]
    base, drafter = text_counts(architecture(run.config, "model")["text_config"]), drafter_counts(
        architecture(run.config, "mtp"))
    assert run.base.count == sum(base.values())
    assert run.drafter.count == sum(drafter.values())
    assert abs(sum(base.values()) + published["encoders"] - published["total"]) <= TOLERANCE * published["total"]
    if "effective" in published:  # without the token and per-layer embedding tables
        effective = sum(base.values()) - base["embeddings"] + published["encoders"]
        assert abs(effective - published["effective"]) <= TOLERANCE * published["effective"]
    if "active" in published:  # 8 of 128 experts per token
        t = architecture(run.config, "model")["text_config"]
        active = sum(base.values()) - base["experts"] * (1 - t["top_k_experts"] / t["num_experts"])
        assert abs(active - published["active"]) <= TOLERANCE * published["active"]
    assert abs(sum(drafter.values()) - published["drafter"]) <= published["drafter_tol"] * published["drafter"]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_released_config_bytes_match_the_formulas(runs, name):
    run = runs[name]
    dtype = run.scheme.model_dtype
    text = architecture(run.config, "model")["text_config"]
    assert run.base.nbytes == stored_bytes(text_counts(text), dtype)
    assert run.drafter.nbytes == stored_bytes(drafter_counts(architecture(run.config, "mtp")), dtype)
    cache = run.base.kv_cache
    assert cache.tokens == run.config.overrides["context_window_size"] == 8192
    assert (cache.allocated(), cache.unpadded(), cache.minimum()) == kv_bytes(text, 8192, dtype)
    assert run.drafter.kv_cache is None  # it reads the base model's


def test_e4b_figures_by_hand(runs):
    """E4B, float32, 8192 tokens: 42 layers padded to 2 x 512; 35 sliding layers of 2 x 256 and 7
    full of 2 x 512 unpadded; 20 sliding layers x 512 tokens and 4 full layers store K/V."""
    cache = runs["gemma4-e4b-litert-mtp"].base.kv_cache
    mib = 2**20
    assert cache.allocated() == 42 * 2 * (2 * 512) * 8192 * 4 == 2688 * mib
    assert cache.unpadded() == (35 * 2 * 256 + 7 * 2 * 512) * 2 * 8192 * 4 == 1568 * mib
    assert cache.minimum() == (20 * 2 * 256 * 512 + 4 * 2 * 512 * 8192) * 2 * 4 == 296 * mib


def write_yaml(directory: Path, data: dict) -> Path:
    """``data`` as ``directory/x.yaml``; its path."""
    path = directory / "x.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(capsys, *args):
    status = main(["build", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err.strip().splitlines()


def test_dry_run_output(capsys):
    status, out, err = cli(capsys, CONFIGS / "gemma4-e2b-assistant.yaml", "--dry-run")
    assert status == 0 and err == []
    for line in ["model.layers.{0-3,5-8,10-13}  (12 layers: sliding)",
                 "model.layers.{4,9,14}  (3 layers: full)",
                 "model.layers.{15-18,20-23,25-28,30-33}  (16 layers: sliding with shared K/V)",
                 "model.layers.{19,24,29,34}  (4 layers: full with shared K/V)",
                 "total: 4.629B parameters (4,628,569,379)",
                 "total: 77.99M parameters (77,993,476)",
                 "KV cache: none of its own"]:
        assert line in out, line
    # KV-shared sliding layers carry the double-wide MLP: 2 x 6144 rows
    assert [row for row in out.splitlines() if ".mlp.gate_proj.weight" in row][2].split()[1] == "12288x1536"
    assert "memory estimate: weights 2,526.1 MiB + KV cache 560.0 MiB (allocated) = 3,086.1 MiB" in out


def test_verbose_lists_every_parameter(capsys, runs):
    status, out, _ = cli(capsys, CONFIGS / "gemma4-31b-assistant.yaml", "--dry-run", "--verbose")
    assert status == 0
    run = runs["gemma4-31b-assistant"]
    names = [p.name for p in run.base.parameters + run.drafter.parameters]
    rows = [line.split()[0] for line in out.splitlines() if line.startswith("  ") and not line.startswith("   ")]
    assert [r for r in rows if r in set(names)] == names
    assert "model.layers.59.self_attn.k_proj.weight" in names and "model.layers.59.self_attn.v_proj.weight" not in names


def test_dry_run_writes_nothing(capsys, tmp_path, monkeypatch):
    cache, output = tmp_path / "cache", tmp_path / "out"
    monkeypatch.setenv("MLC_MTP_CACHE", str(cache))
    before = sorted(p.stat().st_mtime_ns for p in CONFIGS.rglob("*"))
    status, out, _ = cli(capsys, CONFIGS / "gemma4-26b-a4b-assistant.yaml", "--dry-run", "--output", output)
    assert status == 0 and f"output {output} (not written)" in out
    assert not output.exists() and not cache.exists()
    assert sorted(p.stat().st_mtime_ns for p in CONFIGS.rglob("*")) == before


def variant(tmp_path: Path, name: str, section: str | None = None, key: list[str] = (), value=None) -> Path:
    """A copy of ``configs/<name>.yaml`` in ``tmp_path`` whose ``section`` architecture file has
    ``key`` set to ``value`` (``value`` a callable: applied to the old value)."""
    raw = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    for part in ("model", "mtp"):
        content = json.loads((CONFIGS / raw[part]["architecture"]).read_text())
        if part == section:
            node = content
            for k in key[:-1]:
                node = node[k]
            node[key[-1]] = value(node[key[-1]]) if callable(value) else value
        arch = tmp_path / f"{part}.json"
        arch.write_text(json.dumps(content))
        raw[part]["architecture"] = str(arch)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


E2B = "gemma4-e2b-assistant"


@pytest.mark.parametrize("name, section, key, value, needles", [
    (E2B, "model", ["text_config", "hidden_size"], "1536",
     ["model.json", "text_config.hidden_size", "'1536' is not of type 'integer'"]),
    (E2B, "model", ["text_config", "num_attention_heads"], 0,
     ["model.json", "text_config.num_attention_heads", "0 is less than the minimum of 1"]),
    (E2B, "model", ["text_config", "layer_types"], lambda types: types[:-1],
     ["model.json", "layer_types has 34 entries, expected num_hidden_layers=35"]),
    (E2B, "model", ["text_config", "num_kv_shared_layers"], 35, ["model.json", "num_kv_shared_layers=35 leaves no"]),
    ("gemma4-26b-a4b-assistant", "model", ["text_config", "enable_moe_block"], "yes",
     ["model.json", "text_config.enable_moe_block", "'yes' is not of type 'boolean'"]),
    (E2B, "mtp", ["backbone_hidden_size"], 2560,
     ["mtp.json", "backbone_hidden_size: 2560, expected the base model's hidden_size: 1536"]),
    (E2B, "mtp", ["text_config", "num_key_value_heads"], 2,
     ["mtp.json", "text_config.num_key_value_heads: 2, expected the base model's KV heads of layer 13 "
                  "(sliding_attention, whose K/V its sliding_attention layers read): 1"]),
    (E2B, "mtp", ["text_config", "global_head_dim"], 256,
     ["mtp.json", "text_config.global_head_dim: 256, expected the base model's head_dim of layer 14 "
                  "(full_attention, whose K/V its full_attention layers read): 512"]),
    ("gemma4-31b-assistant", "mtp", ["text_config", "num_global_key_value_heads"], 8,
     ["mtp.json", "text_config.num_global_key_value_heads: 8, expected the base model's KV heads of layer 59 "
                  "(full_attention, whose K/V its full_attention layers read): 4"]),
])
def test_bad_architecture_field_is_one_line(capsys, tmp_path, name, section, key, value, needles):
    status, out, err = cli(capsys, variant(tmp_path, name, section, key, value), "--dry-run")
    assert status == 2 and out == ""
    assert len(err) == 1 and err[0].startswith("error: "), err
    for needle in needles:
        assert needle in err[0], err[0]


def test_malformed_architecture_file(capsys, tmp_path):
    path = variant(tmp_path, E2B)
    (tmp_path / "model.json").write_text('{"text_config": {"hidden_size": 1536,}}')
    status, _, err = cli(capsys, path, "--dry-run")
    assert status == 2 and len(err) == 1
    assert f"{tmp_path / 'model.json'}: malformed JSON at line 1, column 38" in err[0]


def weights_dir(tmp_path: Path, content: dict) -> Path:
    directory = tmp_path / "weights"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(content))
    return directory


def test_present_weights_config_is_read_and_cross_checked(tmp_path):
    real = json.loads((CONFIGS / "arch" / "gemma-4-e2b-it.json").read_text())
    del real["_comment"]
    real["text_config"]["eos_token_id"] = 1  # fields the architecture file leaves out are not compared
    raw = yaml.safe_load((CONFIGS / "gemma4-e2b-assistant.yaml").read_text())
    raw["source"]["path"] = str(weights_dir(tmp_path, real))
    raw["model"]["architecture"] = str(CONFIGS / raw["model"]["architecture"])
    raw["mtp"]["architecture"] = str(CONFIGS / raw["mtp"]["architecture"])
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    run = dry_run(load_config(path))
    assert run.base.origin == tmp_path / "weights" / "config.json"
    assert run.base.count == 4_628_569_379

    real["text_config"]["num_kv_shared_layers"] = 18
    (tmp_path / "weights" / "config.json").write_text(json.dumps(real))
    with pytest.raises(PipelineError) as err:
        dry_run(load_config(path))
    assert str(err.value) == (f"{CONFIGS / 'arch' / 'gemma-4-e2b-it.json'}: text_config.num_kv_shared_layers: 20, "
                              f"but {tmp_path / 'weights' / 'config.json'} says 18; expected the architecture file to "
                              f"agree with the weights' config.json")


def test_a_config_without_architecture_is_refused(capsys, tmp_path):
    """A Hugging Face directory without config.json and no architecture file: nothing to plan from."""
    (tmp_path / "weights").mkdir()
    path = write_yaml(tmp_path, {"name": "x", "model": {"family": "gemma3"},
                                 "source": {"format": "hf-safetensors", "path": "weights"}})
    status, _, err = cli(capsys, path, "--dry-run")
    assert status == 2 and len(err) == 1
    assert "x.yaml: model.architecture: not given, and the weights' config.json is not present" in err[0]


def test_a_gguf_source_plans_from_its_header(tmp_path):
    """A GGUF config needs no architecture file: the plan takes the config the build's import takes
    from the GGUF's metadata (every parameter shape of the model the import fills)."""
    gguf_path = write_gguf(tmp_path / "tiny.gguf", layers=2)
    path = write_yaml(tmp_path, {"name": "x", "model": {"family": "gemma3", "overrides": {"context_window_size": 64}},
                                 "source": {"format": "gguf", "path": "tiny.gguf"}, "quantization": "q0f32"})
    run = dry_run(load_config(path))
    family = get_family("gemma3")
    config = config_from_gguf(family, GGUFSource(gguf_path), {"context_window_size": 64})
    assert run.base.origin == gguf_path and run.base.config == config
    assert {p.name: p.shape for p in run.base.parameters} == expected_shapes(family, config)
    assert config.num_hidden_layers == 2 and config.hidden_size == 64 and config.context_window_size == 64


def test_a_gguf_of_another_architecture_is_refused(capsys, tmp_path):
    write_gguf(tmp_path / "llama.gguf", arch="llama")
    path = write_yaml(tmp_path, {"name": "x", "model": {"family": "gemma3"},
                                 "source": {"format": "gguf", "path": "llama.gguf"}})
    status, _, err = cli(capsys, path, "--dry-run")
    assert status == 2 and err == [f"error: {tmp_path / 'llama.gguf'}: general.architecture is 'llama', "
                                   f"expected 'gemma3'"]


def test_mtp_family_drafter_over_gemma3(tmp_path):
    """A DeepSeek-style drafter: the base model's decoder layer plus eh_proj, and a one-layer cache."""
    base = {"vocab_size": 96, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "sliding_window": 8,
            "layer_types": ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]}
    (tmp_path / "base.json").write_text(json.dumps(base))
    (tmp_path / "mtp.json").write_text(json.dumps({"_comment": "test", "layer_type": "full_attention"}))
    (tmp_path / "c.yaml").write_text(
        "name: m\nmodel: {family: gemma3, architecture: base.json, overrides: {context_window_size: 100}}\n"
        "source: {format: gguf, path: m.gguf}\nquantization: q0f32\n"
        "mtp: {family: gemma3_mtp, format: safetensors, path: mtp.safetensors, architecture: mtp.json}\n")
    run = dry_run(load_config(tmp_path / "c.yaml"))
    shapes = {p.name: p.shape for p in run.drafter.parameters}
    assert shapes["eh_proj.weight"] == (64, 128) and shapes["mtp_block.self_attn.q_proj.weight"] == (128, 64)
    assert run.drafter.count == 2 * 64 + 64 * 128 + (2 * 64 * 128 + 2 * 64 * 64 + 2 * 32 + 4 * 64 + 3 * 64 * 128) + 64
    cache = run.drafter.kv_cache
    assert [(layer.kind, layer.kv_heads, layer.head_dim, layer.window) for layer in cache.layers] == [
        ("full_attention", 2, 32, None)]
    assert cache.tokens == 112 and cache.allocated() == 2 * 2 * 32 * 112 * 4  # 100 tokens in pages of 16
    assert run.base.kv_cache.minimum() == (3 * 8 + 112) * 2 * 2 * 32 * 4
