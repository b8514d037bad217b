"""TFLite weight reading: every value recovered exactly, checked against numpy and against the
LiteRT interpreter's own DEQUANTIZE kernel (reference kernels), and clear errors on bad models.

Models are packed with the TFLite schema's generated object API (see ``tests/helpers/litert.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as tfl

from pipeline.errors import PipelineError
from pipeline.sources.tflite import TFLiteModel, unpack_int4
from tests.helpers.litert import TT, ModelOptions, Weight, build_tflite, default_weights, pack_int4


def _interpreter_outputs(data: bytes) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    interp.invoke()
    return {d["name"]: interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()}


@pytest.mark.parametrize("offset_buffers", [False, True], ids=["inline-data", "offset-size"])
def test_values_exact(offset_buffers, tmp_path):
    weights = default_weights(seed=1)
    data, _ = build_tflite(weights, ModelOptions(offset_buffers=offset_buffers))
    path = tmp_path / "m.tflite"
    path.write_bytes(data)
    runtime = _interpreter_outputs(data)
    checked_against_runtime = 0
    with TFLiteModel(path) as model:
        infos = {t.name: t for t in model.constant_tensors()}
        assert sorted(infos) == sorted(w.name for w in weights)
        for w in weights:
            info = infos[w.name]
            assert info.storage == ("offset" if offset_buffers else "inline")
            assert info.shape == w.shape
            got = model.load(w.name)
            assert got.dtype == w.expected.dtype, w.name
            assert got.shape == w.shape
            np.testing.assert_array_equal(got, w.expected, err_msg=w.name)
            if w.name + "/dequantized" in runtime:
                np.testing.assert_array_equal(got.astype(np.float32), runtime[w.name + "/dequantized"], err_msg=w.name)
                checked_against_runtime += 1
    assert checked_against_runtime == 6  # 5 quantized weights and the float16 table


def test_types_and_quantization_listing():
    weights = default_weights(seed=2)
    model = TFLiteModel(build_tflite(weights)[0])
    by_name = {t.name: t for t in model.tensors}
    int8 = by_name["mtp/pre_projection/w_int8"]
    assert (int8.dtype, int8.is_quantized, int8.quantization.per_channel, int8.quantization.quantized_dimension) == \
        ("INT8", True, True, 0)
    np.testing.assert_array_equal(int8.quantization.scale, np.array(weights[0].scale, np.float32))
    np.testing.assert_array_equal(int8.quantization.zero_point, weights[0].zero_point)
    assert by_name["mtp/layer_0/q_proj/w_int8_axis1"].quantization.quantized_dimension == 1
    int4 = by_name["mtp/layer_0/mlp/w_int4"]
    assert (int4.dtype, int4.nbytes) == ("INT4", 18)  # 35 values -> 18 bytes
    assert not by_name["mtp/lm_head/w_int4_per_tensor"].quantization.per_channel
    norm = by_name["mtp/final_norm/scale"]
    assert norm.dtype == "FLOAT32" and norm.quantization is not None and not norm.is_quantized
    assert by_name["mtp/layer_0/input_norm/scale_bf16"].dtype == "BFLOAT16"
    activation = by_name["mtp/pre_projection/w_int8/dequantized"]
    assert not activation.has_data and activation.storage == "none"
    with pytest.raises(PipelineError, match="has no data"):
        model.load(activation)
    assert model.description == "test model" and model.subgraph_names == ["main"]


def test_stray_quantization_on_float_tensors_is_ignored():
    """A float norm with quantization metadata (scale 1e-30) must come back unchanged, not ~0."""
    rng = np.random.default_rng(5)
    values = (1.0 + rng.random(16)).astype(np.float32)
    w = Weight("norm", (16,), TT.FLOAT32, values.tobytes(), values, [1e-30], [0], 0)
    model = TFLiteModel(build_tflite([w], ModelOptions(dequantize_ops=False))[0])
    got = model.load("norm")
    np.testing.assert_array_equal(got, values)
    assert np.abs(got).min() >= 1.0


def test_bf16_widened_exactly_not_via_float16():
    # 1e-20 and 70000 are representable in bf16 but not in float16 (underflow / overflow).
    bits = np.array([0x1E3D, 0x4789, 0xBF80, 0x0001], dtype="<u2")  # incl. a subnormal
    w = Weight("bf", (4,), TT.BFLOAT16, bits.tobytes())
    got = TFLiteModel(build_tflite([w], ModelOptions(dequantize_ops=False))[0]).load("bf")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), bits.astype(np.uint32) << 16)
    assert got[1] == 70144.0 and got[2] == -1.0 and 0 < got[0] < 1e-19


def test_int4_nibble_order_and_sign_extension():
    packed = np.array([0x21, 0xF8, 0x07], dtype=np.uint8)
    np.testing.assert_array_equal(unpack_int4(packed, 5), [1, 2, -8, -1, 7])
    np.testing.assert_array_equal(unpack_int4(packed, 6, signed=False), [1, 2, 8, 15, 7, 0])
    assert pack_int4(np.array([1, 2, -8, -1, 7])) == bytes([0x21, 0xF8, 0x07])


def test_shared_weights_listed_once_across_subgraphs():
    weights = default_weights(seed=3)
    model = TFLiteModel(build_tflite(weights, ModelOptions(extra_subgraph=True, dequantize_ops=False))[0])
    assert len(model.tensors) == 2 * len(weights)
    assert [t.name for t in model.constant_tensors()] == [w.name for w in weights]
    assert dict(model.items()).keys() == {w.name for w in weights}


def test_external_buffers():
    weights = default_weights(seed=4)
    for w in weights[:3]:
        w.external = True
    data, blob = build_tflite(weights, ModelOptions(dequantize_ops=False))
    model = TFLiteModel(data, external={"weights.bin": blob})
    assert model.external_groups == ["weights.bin"]
    for w in weights:
        np.testing.assert_array_equal(model.load(w.name), w.expected)
    assert model.tensor(weights[0].name).storage == "external"
    with pytest.raises(PipelineError, match="external buffer group 'weights.bin'.*not provided"):
        TFLiteModel(data).load(weights[0].name)
    with pytest.raises(PipelineError, match="runs past the end of group"):
        TFLiteModel(data, external=blob[:5]).load(weights[1].name)


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------


def _one(weight: Weight) -> TFLiteModel:
    return TFLiteModel(build_tflite([weight], ModelOptions(dequantize_ops=False))[0], name="m.tflite")


@pytest.mark.parametrize("shape,ttype,nbytes,expected", [
    ((4, 4), TT.INT8, 15, 16), ((5, 7), TT.INT4, 17, 18), ((3,), TT.FLOAT32, 13, 12), ((2, 2), TT.BFLOAT16, 6, 8),
])
def test_buffer_size_mismatch(shape, ttype, nbytes, expected):
    model = _one(Weight("w", shape, ttype, bytes(nbytes), scale=[0.5], zero_point=[0]))
    with pytest.raises(PipelineError, match=rf"m.tflite: tensor 'w': buffer holds {nbytes} bytes, expected {expected}"):
        model.load("w")


def test_bad_quantization_parameters():
    q = np.arange(12, dtype=np.int8).reshape(3, 4)
    with pytest.raises(PipelineError, match="2 scales for dimension 0 of size 3"):
        _one(Weight("w", (3, 4), TT.INT8, q.tobytes(), scale=[0.1, 0.2], zero_point=[0, 0])).load("w")
    with pytest.raises(PipelineError, match="quantized_dimension 5 is outside"):
        _one(Weight("w", (3, 4), TT.INT8, q.tobytes(), scale=[0.1] * 3, zero_point=[0] * 3, axis=5)).load("w")
    with pytest.raises(PipelineError, match="3 scales but 2 zero points"):
        _one(Weight("w", (3, 4), TT.INT8, q.tobytes(), scale=[0.1] * 3, zero_point=[0, 1])).load("w")


def test_unquantized_int8_returns_integers():
    q = np.array([[-128, 0, 127]], dtype=np.int8)
    got = _one(Weight("w", (1, 3), TT.INT8, q.tobytes())).load("w")
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, q)


def test_not_tflite_and_corrupt_flatbuffers(tmp_path):
    data, _ = build_tflite(default_weights(seed=6), ModelOptions(dequantize_ops=False))
    with pytest.raises(PipelineError, match=r"not a TFLite model \(file identifier b'XXXX'"):
        TFLiteModel(data[:4] + b"XXXX" + data[8:])
    with pytest.raises(PipelineError, match="too short"):
        TFLiteModel(data[:6])
    with pytest.raises(PipelineError, match="corrupt TFLite flatbuffer"):
        TFLiteModel(data[: len(data) // 2])
    with pytest.raises(PipelineError, match=r"Model \(root table\): 4 bytes at offset 2147483632 "
                                            r"lie outside the \d+-byte flatbuffer"):
        TFLiteModel(b"\xf0\xff\xff\x7fTFL3" + data[8:])
    with pytest.raises(PipelineError, match="not found"):
        TFLiteModel(tmp_path / "missing.tflite")
    (tmp_path / "empty.tflite").write_bytes(b"")
    with pytest.raises(PipelineError, match="empty file"):
        TFLiteModel(tmp_path / "empty.tflite")


def test_offsets_past_the_end():
    weights = default_weights(seed=7)
    data, _ = build_tflite(weights, ModelOptions(offset_buffers=True, dequantize_ops=False))
    with pytest.raises(PipelineError, match=r"buffer 9: offset \d+ \+ size 12 = \d+ runs past the end of the model"):
        TFLiteModel(data[:-8])
    # a tensor pointing at a buffer that does not exist
    model = tfl.ModelT.InitFromPackedBuf(build_tflite(weights[:1], ModelOptions(dequantize_ops=False))[0])
    model.subgraphs[0].tensors[0].buffer = 99
    import flatbuffers

    builder = flatbuffers.Builder(256)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with pytest.raises(PipelineError, match="buffer index 99 is past the 2 buffers"):
        TFLiteModel(bytes(builder.Output()))
