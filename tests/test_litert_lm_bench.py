"""The pure-Python parts of ``benchmarks/litert_lm.py`` (the export and the benchmark itself are
not run by tests): reading ``litert-lm benchmark``'s output, the idempotent litert-torch patches,
the command line."""

from __future__ import annotations

import pytest

from benchmarks import litert_lm
from pipeline.errors import PipelineError

# Captured from `python benchmarks/litert_lm.py bench --verbose` (litert-lm 0.18.1, 2026-12-07, a busy machine).
SAMPLE = """\
Benchmarking model: gemma3-270m-int8.litertlm (/root/.cache/mlc-mtp-litert/gemma3-270m-int8.litertlm)
Backend                    : cpu
Number of tokens in prefill: 128
Number of tokens in decode : 64
Max number of tokens       : 4096
Cache                      : disk
Speculative decoding       : auto
Running warmup..
Running iteration 1 of 1..
----- Results -----
Prefill speed:        170.36 tokens/s
Decode speed:         13.96 tokens/s
Init time:            4.8551 s
Time to first token:  0.8230 s
"""


def test_parse_benchmark_reads_the_results_block():
    assert litert_lm.parse_benchmark(SAMPLE) == {"prefill": 170.36, "decode": 13.96, "init_s": 4.8551,
                                                 "ttft_s": 0.8230}


def test_parse_benchmark_names_a_failure_or_a_missing_rate():
    failed = SAMPLE.split("----- Results")[0] + "An error occurred during benchmarking\nTraceback\nValueError: bad\n"
    with pytest.raises(PipelineError, match="failed: ValueError: bad"):
        litert_lm.parse_benchmark(failed)
    with pytest.raises(PipelineError, match="no decode speed"):
        litert_lm.parse_benchmark(SAMPLE.replace("Decode speed:         13.96 tokens/s\n", ""))


@pytest.mark.parametrize("patch", litert_lm.PATCHES, ids=lambda p: p.why)
def test_patches_apply_once_and_refuse_unknown_text(patch):
    original = "header\n" + patch.old + "\ntrailer\n"
    patched = litert_lm.apply_patch(original, patch, "f.py")
    assert patch.new in patched and patched.startswith("header\n") and patched.endswith("\ntrailer\n")
    assert litert_lm.apply_patch(patched, patch, "f.py") == patched
    with pytest.raises(PipelineError, match="f.py: expected the text"):
        litert_lm.apply_patch("header\n", patch, "f.py")


def test_missing_steps_end_with_one_line_and_status_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(litert_lm, "VENV", tmp_path / "venv")
    monkeypatch.setattr(litert_lm, "CHECKPOINT", tmp_path / "hf")
    monkeypatch.setattr(litert_lm, "MODEL", tmp_path / "m.litertlm")
    assert litert_lm.main(["export"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'hf'}: no checkpoint; run " \
                                      "`python benchmarks/litert_lm.py checkpoint`\n"
    assert litert_lm.main(["bench"]) == 2
    assert "no litert-lm; run `python benchmarks/litert_lm.py setup`" in capsys.readouterr().err
    args = litert_lm.parse_args(["bench"])
    assert (args.prefill, args.decode, args.threads, args.runs) == (128, 64, 2, 1)
