"""LiteRT-LM container reading: files packed by ``litert-lm-builder`` read back exactly (compared
with ``litert-lm-peek``'s view and with the packed inputs), and corrupt files give one-line
PipelineErrors, never crashes (including a hypothesis fuzz over mutated bytes)."""

from __future__ import annotations

import io
import re
import struct
import tempfile
import zlib
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litert_lm_builder import litertlm_header_schema_py_generated as schema

from pipeline.errors import PipelineError
from pipeline.sources.litertlm import BLOCK_SIZE, LiteRTLMFile
from tests.helpers.litert import ModelOptions, build_litertlm, build_tflite, default_weights


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A container with prefill/decode, LlmMetadata, drafter, aux and tokenizer sections."""
    root = tmp_path_factory.mktemp("litertlm")
    weights = default_weights(seed=10)
    drafter, _ = build_tflite(weights)
    prefill, _ = build_tflite(default_weights(seed=11)[:2], ModelOptions(description="prefill"))
    aux, _ = build_tflite(default_weights(seed=12)[5:], ModelOptions(offset_buffers=True))
    path = build_litertlm(root, drafter, prefill=prefill, aux=aux)
    return {"path": path, "weights": weights, "drafter": drafter, "prefill": prefill, "aux": aux,
            "tokenizer": (root / "tokenizer.json").read_text(encoding="utf-8"),
            "aux_weights": default_weights(seed=12)[5:]}


def _peek(path: Path) -> list[dict]:
    """Sections as ``litert-lm-peek`` (the format owner's inspector) prints them."""
    from litert_lm_builder import litertlm_peek

    out = io.StringIO()
    litertlm_peek.peek_litertlm_file(str(path), None, out)
    sections = []
    for block in re.split(r"\nSection \d+:\n", out.getvalue())[1:]:
        sections.append({
            "begin": int(re.search(r"Begin Offset:\s+(\d+)", block).group(1)),
            "end": int(re.search(r"End Offset:\s+(\d+)", block).group(1)),
            "type": re.search(r"Data Type:\s+(\w+)", block).group(1),
            "model_type": (m.group(1) if (m := re.search(r"Key: model_type, Value \(String\): (\S+)", block))
                           else None),
        })
    return sections


def test_sections_match_builder_and_peek(packed):
    path = packed["path"]
    with LiteRTLMFile(path) as f:
        assert f.version == (1, 7, 0)
        assert [(s.data_type, s.role) for s in f.sections] == [
            ("TFLiteModel", "tf_lite_prefill_decode"), ("LlmMetadataProto", None),
            ("TFLiteModel", "tf_lite_mtp_drafter"), ("TFLiteModel", "tf_lite_mtp_aux"), ("HF_Tokenizer_Zlib", None)]
        assert [(s.begin, s.end, s.data_type, s.role) for s in f.sections] == \
            [(p["begin"], p["end"], p["type"], p["model_type"]) for p in _peek(path)]
        assert all(s.begin % BLOCK_SIZE == 0 for s in f.sections)
        assert f.sections[-1].end == path.stat().st_size
        assert f.roles() == ["tf_lite_prefill_decode", "tf_lite_mtp_drafter", "tf_lite_mtp_aux"]
        meta = f.system_metadata
        assert meta["Authors"] == "pipeline tests" and meta["draft_steps"] == 3 and meta["big"] == 2**40 + 5
        assert meta["ratio"] == 0.5 and meta["mtp"] is True and "uuid" in meta
        prefill = f.find("tf_lite_prefill_decode")
        assert prefill.items == {"model_type": "tf_lite_prefill_decode", "backend_constraint": "cpu"}
        drafter = f.find("tf_lite_mtp_drafter", "TFLiteModel")
        assert drafter.items["num_draft_steps"] == 3
        assert bytes(f.section_bytes(drafter)) == packed["drafter"]
        assert bytes(f.section_bytes(prefill.index, "TFLiteModel")) == packed["prefill"]
        assert bytes(f.section_bytes(f.find("tf_lite_mtp_aux"))) == packed["aux"]


def test_drafter_weights_recovered_exactly(packed):
    with LiteRTLMFile(packed["path"]) as f:
        model = f.tflite_model("tf_lite_mtp_drafter")
        for w in packed["weights"]:
            got = model.load(w.name)
            assert got.dtype == w.expected.dtype and got.shape == w.shape
            np.testing.assert_array_equal(got, w.expected, err_msg=w.name)
        aux = f.tflite_model(f.find("tf_lite_mtp_aux"))
        assert aux.constant_tensors()[0].storage == "offset"
        for w in packed["aux_weights"]:
            np.testing.assert_array_equal(aux.load(w.name), w.expected, err_msg=w.name)


def test_tokenizer_and_metadata(packed):
    with LiteRTLMFile(packed["path"]) as f:
        text = f.tokenizer_json()
        assert text == packed["tokenizer"] and "日本" in text
        from litert_lm_builder.runtime.proto import llm_metadata_pb2

        meta = llm_metadata_pb2.LlmMetadata()
        meta.ParseFromString(bytes(f.section_bytes(f.sections_of_type("LlmMetadataProto")[0])))
        assert meta.max_num_tokens == 1234


def test_wrong_type_and_missing_role(packed):
    with LiteRTLMFile(packed["path"]) as f:
        with pytest.raises(PipelineError, match=r"section 0 has data_type TFLiteModel, expected HF_Tokenizer_Zlib"):
            f.tokenizer_json(0)
        with pytest.raises(PipelineError, match=r"section 4 has data_type HF_Tokenizer_Zlib, expected TFLiteModel"):
            f.tflite_model(4)
        with pytest.raises(PipelineError, match=r"model_type 'tf_lite_mtp_drafter' has data_type 2:TFLiteModel, "
                                                r"expected TFLiteWeights"):
            f.find("tf_lite_mtp_drafter", "TFLiteWeights")
        with pytest.raises(PipelineError, match=r"no section with model_type 'tf_lite_per_layer_embedder' \(roles "
                                                r"present: tf_lite_prefill_decode, tf_lite_mtp_drafter, "
                                                r"tf_lite_mtp_aux\)"):
            f.find("tf_lite_per_layer_embedder")
        with pytest.raises(PipelineError, match="section index 9 is out of range"):
            f.section_bytes(9)


# ----------------------------------------------------------------------------------------------
# corrupt files
# ----------------------------------------------------------------------------------------------


def _rewrite_header(src: Path, dst: Path, mutate) -> Path:
    """Copy ``src`` to ``dst`` with its header unpacked by the generated object API, changed by
    ``mutate(LiteRTLMMetaDataT)`` and packed again (header end updated)."""
    data = bytearray(src.read_bytes())
    (end,) = struct.unpack_from("<Q", data, 24)
    if not hasattr(schema, "VDataCreator"):  # litert-lm-builder 0.18.1's object API unpacker misspells it
        schema.VDataCreator = schema.VdataCreator
    meta = schema.LiteRTLMMetaDataT.InitFromPackedBuf(bytes(data[32:end]), 0)
    mutate(meta)
    builder = flatbuffers.Builder(1024)
    builder.Finish(meta.Pack(builder))
    header = bytes(builder.Output())
    assert 32 + len(header) <= BLOCK_SIZE
    data[32:BLOCK_SIZE] = header + bytes(BLOCK_SIZE - 32 - len(header))
    struct.pack_into("<Q", data, 24, 32 + len(header))
    dst.write_bytes(bytes(data))
    return dst


def _objects(meta):
    return meta.sectionMetadata.objects


def _error(path: Path) -> str:
    with pytest.raises(PipelineError) as info:
        LiteRTLMFile(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_truncated_files(packed, tmp_path):
    data = packed["path"].read_bytes()
    (end,) = struct.unpack_from("<Q", data, 24)
    cases = {
        0: r"truncated LiteRT-LM file: 0 bytes, shorter than the 32-byte preamble",
        5: r"truncated LiteRT-LM file: 5 bytes",
        20: r"truncated LiteRT-LM file: 20 bytes",
        end - 7: rf"header end offset {end} is past the end of the file \({end - 7} bytes\)",
        len(data) - 10: rf"section 4 \(HF_Tokenizer_Zlib\): end_offset {len(data)} is past the end of the file",
        BLOCK_SIZE + 100: r"section 0 \(TFLiteModel\): end_offset \d+ is past the end of the file \(16484 bytes",
    }
    for size, pattern in cases.items():
        path = tmp_path / f"cut{size}.litertlm"
        path.write_bytes(data[:size])
        assert re.search(pattern, _error(path)), (size, _error(path))


def test_bad_magic_version_and_header_end(packed, tmp_path):
    data = packed["path"].read_bytes()
    bad = tmp_path / "bad.litertlm"
    bad.write_bytes(b"LITERTLX" + data[8:])
    assert "not a LiteRT-LM file (magic b'LITERTLX', expected b'LITERTLM')" in _error(bad)
    bad.write_bytes(b"PK\x03\x04")
    assert "not a LiteRT-LM file (magic b'PK\\x03\\x04'" in _error(bad)
    bad.write_bytes(data[:8] + struct.pack("<I", 2) + data[12:])
    assert "LiteRT-LM major version 2 (file version 2.7.0) is not supported, expected 1" in _error(bad)
    bad.write_bytes(data[:24] + struct.pack("<Q", 16) + data[32:])
    assert "header end offset 16 (bytes 24-31) is below 36" in _error(bad)
    bad.write_bytes(data[:24] + struct.pack("<Q", 2**63) + data[32:])
    assert f"header end offset {2**63} is past the end of the file" in _error(bad)
    with pytest.raises(PipelineError, match="LiteRT-LM file not found"):
        LiteRTLMFile(tmp_path / "nope.litertlm")


def test_offsets_past_end_overlap_and_alignment(packed, tmp_path):
    src, size = packed["path"], packed["path"].stat().st_size

    def edit(name, fn):
        return _error(_rewrite_header(src, tmp_path / name, fn))

    def past_end(meta):
        _objects(meta)[2].endOffset = size + 1

    assert f"section 2 (TFLiteModel): end_offset {size + 1} is past the end of the file ({size} bytes" in \
        edit("past.litertlm", past_end)

    def begin_past_end(meta):
        _objects(meta)[3].beginOffset = 2**64 - BLOCK_SIZE
        _objects(meta)[3].endOffset = 2**64 - 1

    assert f"section 3 (TFLiteModel): end_offset {2**64 - 1} is past the end of the file" in \
        edit("huge.litertlm", begin_past_end)

    def overlap(meta):
        _objects(meta)[1].endOffset = _objects(meta)[2].beginOffset + 10

    message = edit("overlap.litertlm", overlap)
    assert "section 2 (TFLiteModel) begins at 49152, inside section 1 (LlmMetadataProto, bytes 32768-49162): " \
           "sections overlap" in message

    def same_begin(meta):
        _objects(meta)[3].beginOffset = _objects(meta)[2].beginOffset

    assert "sections overlap" in edit("same.litertlm", same_begin)

    def misaligned(meta):
        _objects(meta)[2].beginOffset += 8

    assert "section 2 (TFLiteModel): begin_offset 49160 is not a multiple of the 16384-byte block size" in \
        edit("misaligned.litertlm", misaligned)

    def inverted(meta):
        _objects(meta)[2].endOffset = _objects(meta)[2].beginOffset - 1

    assert "end_offset 49151 is before begin_offset 49152" in edit("inverted.litertlm", inverted)

    def in_header(meta):
        _objects(meta)[0].beginOffset = 0

    assert "section 0 (TFLiteModel): begin_offset 0 is inside the header, expected >= 16384" in \
        edit("inheader.litertlm", in_header)

    def no_sections(meta):
        meta.sectionMetadata = None

    assert "header has no section_metadata" in edit("nosections.litertlm", no_sections)


def test_header_not_a_flatbuffer(packed, tmp_path):
    data = bytearray(packed["path"].read_bytes())
    (end,) = struct.unpack_from("<Q", data, 24)
    rng = np.random.default_rng(0)
    bad = tmp_path / "garbage.litertlm"
    for _ in range(20):
        corrupt = bytearray(data)
        corrupt[32:end] = rng.integers(0, 256, end - 32, dtype=np.uint8).tobytes()
        bad.write_bytes(bytes(corrupt))
        message = _error(bad)
        assert re.search(r"header is not a valid LiteRTLMMetaData flatbuffer|header has no section_metadata|"
                         r"section \d+ \(", message), message
    corrupt = bytearray(data)
    struct.pack_into("<I", corrupt, 32, 0xFFFFFFF0)
    bad.write_bytes(bytes(corrupt))
    assert "header is not a valid LiteRTLMMetaData flatbuffer: LiteRTLMMetaData (root table): 4 bytes at offset " \
           "4294967280 lie outside" in _error(bad)
    # a valid flatbuffer of another schema (a TFLite model) in place of the header
    other, _ = build_tflite(default_weights()[:1], ModelOptions(dequantize_ops=False))
    corrupt = bytearray(data)
    corrupt[32:32 + len(other)] = other
    struct.pack_into("<Q", corrupt, 24, 32 + len(other))
    bad.write_bytes(bytes(corrupt))
    assert re.search(r"header is not a valid LiteRTLMMetaData flatbuffer|header has no section_metadata|section \d+",
                     _error(bad))


def test_corrupt_section_contents(packed, tmp_path):
    data = bytearray(packed["path"].read_bytes())
    with LiteRTLMFile(packed["path"]) as f:
        tok = f.sections_of_type("HF_Tokenizer_Zlib")[0]
        drafter = f.find("tf_lite_mtp_drafter")
    bad = tmp_path / "bad.litertlm"
    corrupt = bytearray(data)
    struct.pack_into("<Q", corrupt, tok.begin, 5)
    bad.write_bytes(bytes(corrupt))
    with LiteRTLMFile(bad) as f, pytest.raises(PipelineError, match=r"section 4 \(HF_Tokenizer_Zlib\): zlib data holds "
                                                                  r"more than the 5 bytes the section declares"):
        f.tokenizer_json()
    corrupt = bytearray(data)
    corrupt[tok.begin + 8:tok.end] = zlib.compress(b"x") + bytes(tok.end - tok.begin - 8 - len(zlib.compress(b"x")))
    bad.write_bytes(bytes(corrupt))
    with LiteRTLMFile(bad) as f, pytest.raises(PipelineError, match=r"HF_Tokenizer_Zlib\): decompressed to 1 bytes, "
                                                                  r"the section declares \d+"):
        f.tokenizer_json()

    def shorten(meta):
        _objects(meta)[4].endOffset = tok.begin + 8 + 12

    short = _rewrite_header(packed["path"], tmp_path / "short.litertlm", shorten)
    with LiteRTLMFile(short) as f, pytest.raises(PipelineError, match=r"zlib stream ends after \d+ of the \d+ "
                                                                    r"declared bytes \(truncated"):
        f.tokenizer_json()
    corrupt = bytearray(data)
    corrupt[tok.begin + 20] ^= 0xFF
    bad.write_bytes(bytes(corrupt))
    with LiteRTLMFile(bad) as f, pytest.raises(PipelineError, match=r"HF_Tokenizer_Zlib\): corrupt zlib data"):
        f.tokenizer_json()
    corrupt = bytearray(data)
    corrupt[drafter.begin + 4:drafter.begin + 8] = b"NOPE"
    bad.write_bytes(bytes(corrupt))
    with LiteRTLMFile(bad) as f, pytest.raises(PipelineError, match=r"section 2 \(tf_lite_mtp_drafter\): not a TFLite "
                                                                  r"model \(file identifier b'NOPE'"):
        f.tflite_model("tf_lite_mtp_drafter")


# ----------------------------------------------------------------------------------------------
# fuzz
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    drafter, _ = build_tflite(default_weights(seed=20)[:6], ModelOptions(dequantize_ops=False))
    prefill, _ = build_tflite(default_weights(seed=21)[5:], ModelOptions(offset_buffers=True, dequantize_ops=False))
    path = build_litertlm(root, drafter, prefill=prefill, llm_metadata=False)
    data = path.read_bytes()
    with LiteRTLMFile(path) as f:
        regions = [(0, f.header_end)] + [(s.begin, s.end) for s in f.sections]
    return data, regions


def _exercise(path: Path) -> None:
    """Open the file and read everything in it; only PipelineError may escape."""
    with LiteRTLMFile(path) as f:
        for section in f.sections:
            if section.data_type == "TFLiteModel":
                model = f.tflite_model(section)
                for info in model.tensors:
                    if info.has_data:
                        try:
                            model.load(info)
                        except PipelineError:
                            pass
            elif section.data_type == "HF_Tokenizer_Zlib":
                f.tokenizer_json(section)
        for role in ("tf_lite_mtp_drafter", "tf_lite_embedder"):
            f.find(role)


_MUTATION = st.tuples(st.integers(0, 15), st.integers(0, 10**9), st.sampled_from(["byte", "u32", "u64", "zero"]),
                      st.integers(0, 2**64 - 1))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(mutations=st.lists(_MUTATION, min_size=1, max_size=6), cut=st.one_of(st.none(), st.integers(0, 10**9)))
def test_fuzz_mutated_files_only_raise_pipeline_error(small_file, mutations, cut):
    data, regions = small_file
    corrupt = bytearray(data)
    for region_pick, where, kind, value in mutations:
        choices = [(0, 32)] + regions  # preamble, header, each section
        begin, end = choices[region_pick % len(choices)]
        pos = begin + where % max(1, end - begin)
        width = {"byte": 1, "u32": 4, "u64": 8, "zero": 4}[kind]
        pos = min(pos, len(corrupt) - width)
        raw = (0 if kind == "zero" else value).to_bytes(8, "little")[:width]
        corrupt[pos:pos + width] = raw
    if cut is not None:
        corrupt = corrupt[: cut % (len(corrupt) + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.litertlm"
        path.write_bytes(bytes(corrupt))
        try:
            _exercise(path)
        except PipelineError as err:
            assert "\n" not in str(err)
