"""``GGUFSource.group_scales``: a block-quantized tensor's own scales (and minimums) recover its
codes, so ``qsrcf32`` stores exactly the values llama.cpp's dequantization gives."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.quantization import get_scheme
from pipeline.quantization.formats import decode, encode
from pipeline.sources.gguf_file import GGUFSource

SCHEME = get_scheme("qsrcf32")


def _round_trip(source: GGUFSource, name: str) -> None:
    kind = source.tensor_info(name)[1]
    fmt = SCHEME.tensor_format(kind)
    group, scale, minimum = source.group_scales(name)
    assert group == fmt.group_size, kind
    values = source.load(name)
    stored = encode(values, fmt, scale, minimum)
    np.testing.assert_array_equal(decode(stored, fmt), values, err_msg=f"{name} ({kind})")


def test_block_types_gguf_py_writes_keep_their_values(tmp_path):
    path = tmp_path / "blocks.gguf"
    writer = gguf.GGUFWriter(str(path), "gemma3")
    rng = np.random.default_rng(0)
    kinds = {"q8": gguf.GGMLQuantizationType.Q8_0, "q5": gguf.GGMLQuantizationType.Q5_0,
             "q4": gguf.GGMLQuantizationType.Q4_0}
    for name, kind in kinds.items():
        data = rng.standard_normal((8, 64)).astype(np.float32)
        writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)
    writer.add_tensor("f32", rng.standard_normal((8, 64)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    source = GGUFSource(path)
    for name in kinds:
        _round_trip(source, name)
    assert source.group_scales("f32") is None


@pytest.mark.slow
def test_k_quants_of_the_real_gguf_keep_their_values():
    """Q4_K (scale and minimum per 32 values) and Q6_K (scale per 16), which gguf-py cannot
    write, from the demo model's file; also its Q8_0 embedding and a Q5_0 matrix."""
    source = GGUFSource(load_config("configs/gemma3-270m.yaml").source_path())
    for name in ("blk.0.attn_output.weight", "blk.0.ffn_down.weight", "blk.0.attn_q.weight", "token_embd.weight"):
        _round_trip(source, name)
    assert {source.tensor_info(n)[1] for n in ("blk.0.attn_output.weight", "blk.0.ffn_down.weight")} == {"Q4_K", "Q6_K"}
