"""The text report of ``inspect_file`` for LiteRT-LM, TFLite, GGUF and safetensors inputs, and kind
detection by magic bytes rather than by extension."""

from __future__ import annotations

import re
import shutil

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

from pipeline.errors import PipelineError
from pipeline.sources.describe import detect_kind, inspect_file
from pipeline.sources.litertlm import LiteRTLMFile
from tests.helpers.litert import ModelOptions, build_litertlm, build_tflite, default_weights


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    weights = default_weights(seed=30)
    drafter, _ = build_tflite(weights)
    prefill, _ = build_tflite(default_weights(seed=31)[:2], ModelOptions(extra_subgraph=True))
    litertlm = build_litertlm(root / "lm", drafter, prefill=prefill)
    tflite = root / "drafter.tflite"
    tflite.write_bytes(drafter)

    gguf_path = root / "tiny.gguf"
    writer = gguf.GGUFWriter(str(gguf_path), "gemma3")
    writer.add_context_length(128)
    writer.add_string("general.name", "tiny")
    writer.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(10)])
    writer.add_tensor("token_embd.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.add_tensor("blk.0.attn_q.weight", np.ones((2, 4), np.float16))
    q8 = gguf.quants.quantize(np.linspace(-1, 1, 128, dtype=np.float32).reshape(2, 64), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.ffn_up.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    st_dir = root / "hf"
    st_dir.mkdir()
    save_file({"model.embed_tokens.weight": np.zeros((5, 3), np.float32),
               "model.norm.weight": np.ones(3, np.float16)}, str(st_dir / "model-00001-of-00002.safetensors"))
    save_file({"lm_head.weight": np.zeros((5, 3), np.int8)}, str(st_dir / "model-00002-of-00002.safetensors"))
    (st_dir / "config.json").write_text('{"model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"]}')
    return {"root": root, "litertlm": litertlm, "tflite": tflite, "gguf": gguf_path, "st_dir": st_dir,
            "weights": weights}


def test_litertlm_report(files):
    report = inspect_file(files["litertlm"])
    with LiteRTLMFile(files["litertlm"]) as f:
        assert report.startswith(f"LiteRT-LM file {files['litertlm']} (")
        assert f"version 1.7.0, header bytes 32-{f.header_end}" in report
        for s in f.sections:
            role = f"  role {s.role}" if s.role else ""
            assert f"[{s.index}] {s.data_type}{role}  bytes {s.begin}-{s.end} " in report
    assert "Authors = 'pipeline tests'" in report and "draft_steps = 3" in report
    assert "items: model_type='tf_lite_mtp_drafter', num_draft_steps=3" in report
    assert "items: model_type='tf_lite_prefill_decode', backend_constraint='cpu'" in report
    # drafter: 9 weights + 6 DEQUANTIZE outputs, 5 quantized; prefill: 2 weights + 2 outputs, in 2 subgraphs
    assert "TFLite: 15 tensors (9 with data, 5 quantized) in 1 subgraph(s)" in report
    assert "TFLite: 8 tensors (2 with data, 2 quantized) in 2 subgraph(s)" in report
    assert "tokenizer.json:" in report and "7 vocabulary entries" in report
    assert "max_num_tokens: 1234" in report
    assert report.rstrip().endswith("roles: tf_lite_prefill_decode, tf_lite_mtp_drafter")
    detailed = inspect_file(files["litertlm"], section_tensors=True)
    assert "mtp/layer_0/mlp/w_int4  shape [5, 7]  INT4  quant per-channel(axis 0, 5 scales)  18 B inline" in detailed


def test_tflite_report(files):
    report = inspect_file(files["tflite"])
    lines = report.splitlines()
    assert lines[0].startswith(f"TFLite model {files['tflite']} (")
    assert "tensors: 15 in all, 9 with data (weights)" in report
    expected = {
        "mtp/pre_projection/w_int8": "shape [6, 10]  INT8  quant per-channel(axis 0, 6 scales)  60 B inline",
        "mtp/layer_0/q_proj/w_int8_axis1": "shape [4, 6]  INT8  quant per-channel(axis 1, 6 scales)",
        "mtp/layer_0/mlp/w_int4_axis1": "shape [3, 6]  INT4  quant per-channel(axis 1, 6 scales)  9 B",
        "mtp/final_norm/scale": "shape [8]  FLOAT32  quant ignored on FLOAT32 tensor: per-channel(axis 0, 8 scales)",
        "mtp/layer_0/input_norm/scale_bf16": "shape [8]  BFLOAT16  quant ignored on BFLOAT16 tensor",
        "mtp/embedding_f16": "shape [3, 4]  FLOAT16  quant -  24 B inline",
        "mtp/positions_i32": "shape [3]  INT32  quant -  12 B inline",
    }
    for name, text in expected.items():
        assert any(line.strip().startswith(f"{name}  {text}") for line in lines), (name, report)
    w = files["weights"][4]
    assert re.search(rf"{re.escape(w.name)}  shape \[3, 3\]  INT4  quant per-tensor\(scale {w.scale[0]:.6g}, "
                     rf"zp {w.zero_point[0]}\)", report)
    assert "/dequantized" not in report
    assert "[0:9] mtp/pre_projection/w_int8/dequantized  shape [6, 10]  FLOAT32  quant -  no data" in \
        inspect_file(files["tflite"], all_tensors=True)


def test_gguf_report(files):
    summary = inspect_file(files["gguf"])
    assert "shape" not in summary and summary.splitlines()[-1].startswith("tensors (3, ")
    assert summary.splitlines()[-1].endswith(": 1 F32, 1 F16, 1 Q8_0; --tensors lists them")
    report = inspect_file(files["gguf"], all_tensors=True)
    assert "architecture gemma3" in report
    assert "gemma3.context_length = 128" in report and "general.name = 'tiny'" in report
    assert "tokenizer.ggml.tokens = [10 items: 't0', 't1', 't2', 't3', ...]" in report
    assert "token_embd.weight  shape [3, 4]  F32" in report
    assert "blk.0.attn_q.weight  shape [2, 4]  F16" in report
    assert "blk.0.ffn_up.weight  shape [2, 64]  Q8_0" in report


def test_safetensors_reports(files):
    summary = inspect_file(files["st_dir"])
    assert "shape" not in summary and "2 tensors (1 F32, 1 F16); --tensors lists them" in summary
    report = inspect_file(files["st_dir"], all_tensors=True)
    assert f"safetensors directory {files['st_dir']}: 2 file(s)" in report
    assert "config.json: model_type gemma3_text, architectures ['Gemma3ForCausalLM']" in report
    assert "model.embed_tokens.weight  shape [5, 3]  F32" in report
    assert "model.norm.weight  shape [3]  F16" in report
    assert "lm_head.weight  shape [5, 3]  I8" in report
    single = inspect_file(files["st_dir"] / "model-00002-of-00002.safetensors", all_tensors=True)
    assert ": 1 tensors" in single and "lm_head.weight  shape [5, 3]  I8" in single


def test_detection_by_magic_not_extension(files, tmp_path):
    cases = {"litertlm": files["litertlm"], "tflite": files["tflite"], "gguf": files["gguf"],
             "safetensors": files["st_dir"] / "model-00002-of-00002.safetensors"}
    for kind, source in cases.items():
        disguised = tmp_path / f"{kind}.bin"
        shutil.copy(source, disguised)
        assert detect_kind(disguised) == kind
        assert inspect_file(disguised).splitlines()[0].lower().replace("-", "").startswith(
            {"litertlm": "litertlm file", "tflite": "tflite model", "gguf": "gguf file",
             "safetensors": "safetensors file"}[kind])
    # magic wins over a misleading extension
    misnamed = tmp_path / "really_gguf.litertlm"
    shutil.copy(files["gguf"], misnamed)
    assert detect_kind(misnamed) == "gguf"
    assert detect_kind(files["st_dir"]) == "safetensors-dir"


def test_unknown_and_broken_inputs(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01 not a model at all")
    with pytest.raises(PipelineError, match=r"junk.bin: unknown model file kind \(first bytes b'\\x00\\x01 not a'\)"):
        inspect_file(junk)
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    with pytest.raises(PipelineError, match="unknown model file kind"):
        inspect_file(empty)
    fake = tmp_path / "fake.litertlm"
    fake.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(PipelineError, match=r"fake.litertlm: not a LiteRT-LM file \(magic b'PK\\x03\\x04"):
        inspect_file(fake)
    fake_tflite = tmp_path / "fake.tflite"
    fake_tflite.write_bytes(bytes(64))
    with pytest.raises(PipelineError, match=r"not a TFLite model \(file identifier"):
        inspect_file(fake_tflite)
    with pytest.raises(PipelineError, match="directory holds no \\*.safetensors files"):
        inspect_file(tmp_path)
    with pytest.raises(PipelineError, match="file not found"):
        inspect_file(tmp_path / "missing.gguf")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}xxxxxxx")
    with pytest.raises(PipelineError, match="broken.safetensors: unreadable safetensors file"):
        inspect_file(broken)


def test_section_problems_reported_inline(files, tmp_path):
    """A corrupt TFLite section does not hide the rest of the container."""
    data = bytearray(files["litertlm"].read_bytes())
    with LiteRTLMFile(files["litertlm"]) as f:
        drafter = f.find("tf_lite_mtp_drafter")
    data[drafter.begin + 4:drafter.begin + 8] = b"NOPE"
    bad = tmp_path / "bad.litertlm"
    bad.write_bytes(bytes(data))
    report = inspect_file(bad)
    assert "TFLite model unreadable:" in report and "not a TFLite model (file identifier b'NOPE'" in report
    assert "TFLite: 8 tensors (2 with data, 2 quantized) in 2 subgraph(s)" in report
