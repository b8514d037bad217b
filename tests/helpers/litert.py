"""Build small TFLite models and LiteRT-LM containers with the format owners' tools.

* TFLite: the object API of ``ai_edge_litert.schema_py_generated`` (``ModelT``, ``SubGraphT``,
  ``TensorT``, ``BufferT``, ``QuantizationParametersT``) packed by ``flatbuffers.Builder`` with
  file identifier ``TFL3``.  Quantized values are packed here with numpy from integers drawn
  independently of the reader under test (INT4: two per byte, low nibble first).
* LiteRT-LM: ``litert_lm_builder.LitertLmFileBuilder``.

Expected float values are computed independently with numpy in float64 and rounded once to
float32 (TFLite's reference ``Dequantize``: ``(float)(double(scale) * (q - zero_point))``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import flatbuffers
import ml_dtypes
import numpy as np
from ai_edge_litert import schema_py_generated as tfl

TT = tfl.TensorType


@dataclass
class Weight:
    """One tensor to put in a model: its stored bytes, type, quantization and expected values."""

    name: str
    shape: tuple[int, ...]
    type: int
    data: bytes | None
    expected: np.ndarray | None = None
    scale: list[float] | None = None
    zero_point: list[int] | None = None
    axis: int = 0
    external: bool = False


def pack_int4(values: np.ndarray) -> bytes:
    """Two signed 4-bit values per byte, element 2i in the low nibble of byte i."""
    flat = (np.asarray(values).reshape(-1).astype(np.int16) & 0xF).astype(np.uint8)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return bytes(flat[0::2] | (flat[1::2] << 4))


def expected_dequant(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int) -> np.ndarray:
    """``float32(float64(scale) * (q - zero))`` broadcast along ``axis``."""
    shape = [1] * q.ndim
    if scale.size > 1:
        shape[axis] = scale.size
    s = scale.astype(np.float64).reshape(shape)
    z = zero.astype(np.float64).reshape(shape)
    return (s * (q.astype(np.float64) - z)).astype(np.float32)


def quantized_weight(rng, name, shape, bits, axis=0, per_channel=True, zero_points=True) -> Weight:
    """A random INT8/INT4 weight with its per-channel (or per-tensor) scales and expected floats."""
    lo, hi = (-128, 128) if bits == 8 else (-8, 8)
    q = rng.integers(lo, hi, size=shape).astype(np.int8)
    n = shape[axis] if per_channel else 1
    scale = rng.uniform(0.001, 0.2, size=n).astype(np.float32)
    zero = rng.integers(-3, 4, size=n).astype(np.int64) if zero_points else np.zeros(n, np.int64)
    data = q.tobytes() if bits == 8 else pack_int4(q)
    return Weight(name, tuple(shape), TT.INT8 if bits == 8 else TT.INT4, data,
                  expected_dequant(q, scale, zero, axis), [float(x) for x in scale], [int(x) for x in zero], axis)


def float_weight(rng, name, shape, kind="f32", stray_quant=False) -> Weight:
    """A float tensor (f32, f16 or bf16); with ``stray_quant`` it carries quantization metadata
    (tiny scales) that must be ignored."""
    values = rng.normal(0.0, 1.0, size=shape).astype(np.float32)
    if kind == "f32":
        data, expected, ttype = values.tobytes(), values, TT.FLOAT32
    elif kind == "f16":
        half = values.astype(np.float16)
        data, expected, ttype = half.tobytes(), half, TT.FLOAT16
    else:
        bf = values.astype(ml_dtypes.bfloat16)
        data, expected, ttype = bf.tobytes(), bf.astype(np.float32), TT.BFLOAT16
    weight = Weight(name, tuple(shape), ttype, data, expected)
    if stray_quant:
        weight.scale = [1e-30] * shape[0]
        weight.zero_point = [0] * shape[0]
    return weight


def default_weights(seed: int = 0) -> list[Weight]:
    """A drafter-like mix: INT8 and INT4 per-channel (axes 0 and 1), INT4 per-tensor with odd
    element count, float32/bf16 norms with stray quantization, a float16 table and INT32 ids."""
    rng = np.random.default_rng(seed)
    return [
        quantized_weight(rng, "mtp/pre_projection/w_int8", (6, 10), 8, axis=0),
        quantized_weight(rng, "mtp/layer_0/q_proj/w_int8_axis1", (4, 6), 8, axis=1),
        quantized_weight(rng, "mtp/layer_0/mlp/w_int4", (5, 7), 4, axis=0),
        quantized_weight(rng, "mtp/layer_0/mlp/w_int4_axis1", (3, 6), 4, axis=1, zero_points=False),
        quantized_weight(rng, "mtp/lm_head/w_int4_per_tensor", (3, 3), 4, per_channel=False),
        float_weight(rng, "mtp/final_norm/scale", (8,), "f32", stray_quant=True),
        float_weight(rng, "mtp/layer_0/input_norm/scale_bf16", (8,), "bf16", stray_quant=True),
        float_weight(rng, "mtp/embedding_f16", (3, 4), "f16"),
        Weight("mtp/positions_i32", (3,), TT.INT32, np.array([1, -2, 70000], "<i4").tobytes(),
               np.array([1, -2, 70000], np.int32)),
    ]


@dataclass
class ModelOptions:
    """How to lay out a model built by :func:`build_tflite`."""

    offset_buffers: bool = False  # data after the flatbuffer, found by Buffer.offset/size
    dequantize_ops: bool = True  # a DEQUANTIZE op per quantized/f16 weight (for the interpreter)
    external_group: str = "weights.bin"
    extra_subgraph: bool = False  # a second subgraph sharing the weights (like prefill/decode)
    description: str = "test model"
    outputs: list[str] = field(default_factory=list)


def build_tflite(weights: list[Weight], options: ModelOptions | None = None) -> tuple[bytes, bytes]:
    """Pack ``weights`` into a TFLite model; returns ``(model bytes, external group bytes)``."""
    options = options or ModelOptions()
    model = tfl.ModelT()
    model.version = 3
    model.description = options.description
    model.buffers = [tfl.BufferT()]
    external_blob = bytearray()
    ext_buffers = []
    tensors = []
    offset_payloads: list[tuple[int, bytes]] = []
    for w in weights:
        t = tfl.TensorT()
        t.name, t.shape, t.type = w.name, list(w.shape), w.type
        if w.scale is not None:
            q = tfl.QuantizationParametersT()
            q.scale, q.zeroPoint, q.quantizedDimension = list(w.scale), list(w.zero_point), w.axis
            t.quantization = q
        if w.external:
            eb = tfl.ExternalBufferT()
            eb.id, eb.group, eb.offset = len(ext_buffers) + 1, 0, len(external_blob)
            eb.length, eb.packing = len(w.data), "unpacked"
            ext_buffers.append(eb)
            external_blob += w.data + b"\0" * 3
            t.externalBuffer = eb.id
            t.buffer = 0
        elif w.data is not None:
            b = tfl.BufferT()
            if options.offset_buffers:
                b.offset, b.size = 2**40, len(w.data)  # placeholders of the final width, fixed below
                offset_payloads.append((len(model.buffers), w.data))
            else:
                b.data = np.frombuffer(w.data, dtype=np.uint8)
            model.buffers.append(b)
            t.buffer = len(model.buffers) - 1
        tensors.append(t)
    if ext_buffers:
        group = tfl.ExternalBufferGroupT()
        group.name = options.external_group
        model.externalBufferGroups = [group]
        model.externalBuffers = ext_buffers

    sub = tfl.SubGraphT()
    sub.name = "main"
    sub.tensors = tensors
    sub.inputs, sub.outputs, sub.operators = [], [], []
    if options.dequantize_ops:
        code = tfl.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = tfl.BuiltinOperator.DEQUANTIZE
        code.version = 1
        model.operatorCodes = [code]
        for i, w in enumerate(weights):
            if w.external or not (w.type in (TT.INT8, TT.INT4) and w.scale is not None or w.type == TT.FLOAT16):
                continue
            out = tfl.TensorT()
            out.name, out.shape, out.type, out.buffer = f"{w.name}/dequantized", list(w.shape), TT.FLOAT32, 0
            sub.tensors.append(out)
            op = tfl.OperatorT()
            op.opcodeIndex, op.inputs, op.outputs = 0, [i], [len(sub.tensors) - 1]
            sub.operators.append(op)
            sub.outputs.append(len(sub.tensors) - 1)
            options.outputs.append(w.name)
    model.subgraphs = [sub]
    if options.extra_subgraph:
        second = tfl.SubGraphT()
        second.name = "decode"
        second.tensors = [t for t in tensors]
        second.inputs, second.outputs, second.operators = [], [], []
        model.subgraphs.append(second)

    def pack() -> bytes:
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    data = pack()
    if offset_payloads:
        cursor = (len(data) + 15) // 16 * 16
        blob = bytearray()
        for index, payload in offset_payloads:
            model.buffers[index].offset = cursor + len(blob)
            model.buffers[index].size = len(payload)
            blob += payload + b"\0" * ((-len(payload)) % 16)
        data = pack()
        assert (len(data) + 15) // 16 * 16 == cursor, "placeholder width changed the flatbuffer size"
        data = data + b"\0" * (cursor - len(data)) + bytes(blob)
    return data, bytes(external_blob)


def write_tokenizer_json(path: Path) -> str:
    """A small word-level ``tokenizer.json`` written by the ``tokenizers`` library."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "héllo", "wörld", "日本"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path))
    text = path.read_text(encoding="utf-8")
    assert json.loads(text)["model"]["vocab"]["日本"] == 6
    return text


def build_litertlm(directory: Path, drafter: bytes, *, prefill: bytes, aux: bytes | None = None,
                   llm_metadata: bool = True, name: str = "model.litertlm") -> Path:
    """Pack TFLite models, a HF tokenizer and (optionally) LlmMetadata with LitertLmFileBuilder."""
    from litert_lm_builder import litertlm_builder as lb
    from litert_lm_builder.runtime.proto import llm_metadata_pb2

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "prefill.tflite").write_bytes(prefill)
    (directory / "drafter.tflite").write_bytes(drafter)
    write_tokenizer_json(directory / "tokenizer.json")
    builder = lb.LitertLmFileBuilder()
    builder.add_system_metadata(lb.Metadata(key="Authors", value="pipeline tests", dtype=lb.DType.STRING))
    builder.add_system_metadata(lb.Metadata(key="draft_steps", value=3, dtype=lb.DType.INT32))
    builder.add_system_metadata(lb.Metadata(key="big", value=2**40 + 5, dtype=lb.DType.UINT64))
    builder.add_system_metadata(lb.Metadata(key="ratio", value=0.5, dtype=lb.DType.FLOAT32))
    builder.add_system_metadata(lb.Metadata(key="mtp", value=True, dtype=lb.DType.BOOL))
    builder.add_tflite_model(str(directory / "prefill.tflite"), lb.TfLiteModelType.PREFILL_DECODE,
                             backend_constraint="cpu")
    if llm_metadata:
        meta = llm_metadata_pb2.LlmMetadata()
        meta.max_num_tokens = 1234
        (directory / "llm_metadata.pb").write_bytes(meta.SerializeToString())
        builder.add_llm_metadata(str(directory / "llm_metadata.pb"))
    builder.add_tflite_model(str(directory / "drafter.tflite"), lb.TfLiteModelType.MTP_DRAFTER,
                             additional_metadata=[lb.Metadata(key="num_draft_steps", value=3, dtype=lb.DType.INT32)])
    if aux is not None:
        (directory / "aux.tflite").write_bytes(aux)
        builder.add_tflite_model(str(directory / "aux.tflite"), lb.TfLiteModelType.MTP_AUX)
    builder.add_hf_tokenizer(str(directory / "tokenizer.json"))
    out = directory / name
    with open(out, "wb") as handle:
        builder.build(handle)
    return out


# --- the MTP drafter of Gemma 4 LiteRT-LM exports -----------------------------------------------
ARG_SUFFIX = "ReadVariableOp;StatefulPartitionedCall"
DRAFTER_NORMS = ("post_attention_layernorm", "post_feedforward_layernorm", "input_layernorm",
                 "pre_feedforward_layernorm")


def gemma4_drafter_names() -> dict[str, str]:
    """transformers' parameter name -> its tensor name in Google's Gemma 4 LiteRT drafter (4 layers,
    the last one full; evidence in configs/name-maps/litertlm-gemma4-mtp-drafter.yaml's header)."""
    names = {"pre_projection.weight": "MtpDrafterModel.mtp_pre_project/mtp_pre_proj/btm,md->btd/dot_general",
             "post_projection.weight": "MtpDrafterModel.mtp_post_project/mtp_post_proj/btd,dm->btm/dot_general",
             "model.embed_tokens.weight":
                 "MtpDrafterModel.decode_softmax/transformer.decode_softmax/embedder.decode/composite",
             "model.norm.weight": f"jax2tf_arg_0/{ARG_SUFFIX}",
             "model.layers.3.self_attn.q_norm.weight": f"jax2tf_arg_39/{ARG_SUFFIX}"}
    for i in range(4):
        query = f"layer_{i}/layer_{i}.pre_q/attn.pre_q/attn._pre_attention_query_fn/q_einsum"
        post = f"layer_{i}/layer_{i}.post_qkv"
        names[f"model.layers.{i}.self_attn.q_proj.weight"] = f"{query}/reshape;{query}/btd,dH->btH/dot_general"
        names[f"model.layers.{i}.self_attn.o_proj.weight"] = (
            f"{post}/attn.post_qkv/attn_vec_einsum/btH,Hd->btd/dot_general")
        names[f"model.layers.{i}.mlp.gate_proj.weight"] = f"{post}/mlp/gating_einsum1/btd,df->btf/dot_general"
        names[f"model.layers.{i}.mlp.up_proj.weight"] = f"{post}/mlp/gating_einsum2/btd,df->btf/dot_general"
        names[f"model.layers.{i}.mlp.down_proj.weight"] = f"{post}/mlp/linear/btf,fd->btd/dot_general"
        for k, norm in enumerate(DRAFTER_NORMS):  # jax2tf arguments, in the order of the JAX parameter tree
            names[f"model.layers.{i}.{norm}.weight"] = f"jax2tf_arg_{10 + 11 * i + k}/{ARG_SUFFIX}"
    return names


def gemma4_drafter_tensors(shapes: dict[str, tuple[int, ...]],
                           seed: int = 0) -> tuple[list[Weight], dict[str, np.ndarray]]:
    """The drafter's tensors for parameter ``shapes`` (a 4-layer ``gemma4_assistant`` without
    ordered embeddings): INT8 and INT4 per-channel weights, float32 and bfloat16 norms with stray
    quantization, the sliding layers' shared query-norm constant, non-parameter constants; and the
    value each parameter must get (layer scalars: 1)."""
    rng = np.random.default_rng(seed)
    weights, expected = [], {}
    for k, (ours, name) in enumerate(gemma4_drafter_names().items()):
        shape = shapes[ours]
        if len(shape) == 2:
            weight = quantized_weight(rng, name, shape, bits=8 if k % 2 else 4, axis=0)
        else:
            weight = float_weight(rng, name, shape, "bf16" if k % 2 else "f32", stray_quant=True)
        weights.append(weight)
        expected[ours] = weight.expected
    shared = float_weight(rng, "arith.constant3", shapes["model.layers.0.self_attn.q_norm.weight"], stray_quant=True)
    weights.append(shared)
    expected.update({f"model.layers.{i}.self_attn.q_norm.weight": shared.expected for i in range(3)})
    expected.update({f"model.layers.{i}.layer_scalar": np.ones(1, np.float32) for i in range(4)})
    rope = "attn.pre_q/attn._pre_attention_query_fn/maybe_rope/div"
    weights += [float_weight(rng, f"layer_{i}/layer_{i}.pre_q/{rope}", (1, 1, 4)) for i in range(4)]
    softcap = "MtpDrafterModel.decode_softmax/transformer.decode_softmax/transformer._post_process_decoding/div"
    weights += [Weight(softcap, (), TT.FLOAT32, np.float32(30.0).tobytes()),
                Weight("arith.constant14", (1, 1, 8), TT.INT32, np.arange(8, 16, dtype="<i4").tobytes())]
    return weights, expected


def gemma4_drafter_litertlm(directory: Path, weights: list[Weight]) -> Path:
    """A ``.litertlm`` with the drafter ``weights`` beside prefill/decode, metadata and a tokenizer."""
    prefill, _ = build_tflite(default_weights(seed=5)[:2], ModelOptions(description="prefill"))
    return build_litertlm(directory, build_tflite(weights)[0], prefill=prefill)
