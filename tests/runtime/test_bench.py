"""``mlc-mtp bench`` with speculative decoding, its workers run in this process (so that the
stand-in drafter can be injected): the tables' layout and the step counts, which are exact for
greedy stand-ins.  Speeds are printed, not checked."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.runtime import bench
from pipeline.runtime.bench import run_bench, run_worker


def in_process(argv, threads):
    del threads
    return run_worker(argv)


def measure(package, capsys, busy_neighbour=0, prompts=(), **speculative):
    """``prompts`` of the speculative measurement: () one of random ids (synthetic; exact step
    counts for the oracle stand-in), else text prompts."""
    result = run_bench(package, prompt_tokens=16, decode_tokens=13, threads=2, repeats=2,
                       speculative=speculative or None, runner=in_process, busy_neighbour=busy_neighbour,
                       memory_mib=8, prompts=list(prompts))
    return result, capsys.readouterr().out.splitlines()


def test_oracle_drafter_fixed_draft_length(drafter_package, stand_in_mtp, capsys):
    result, lines = measure(drafter_package, capsys, mode="mtp", draft_length=3, adaptive=False)
    spec = result["speculative"]
    # per run: 12 tokens after the first, in 3 steps of 3 accepted drafts + 1; summed over 2 runs
    assert spec["steps"] == 6 and spec["proposed_at"] == [6, 6, 6] and spec["acceptance_rate"] == [1.0, 1.0, 1.0]
    assert spec["accepted_per_step"] == 3.0 and spec["tokens_per_step"] == 4.0 and spec["draft_lengths"] == [3, 3]
    assert spec["speed_up"] == spec["speculative_decode"] / spec["plain_decode"] > 0
    assert [row["engine"] for row in result["rows"]] == ["mlc-mtp (q0f32, TVM CPU)"]  # no GGUF: no llama.cpp row
    assert [r["prompt"] for r in spec["prompts"]] == [bench.SYNTHETIC] and spec["llama_decode"] is None
    heading = lines.index("speculative decoding (mtp drafter, draft length fixed at 3; used 3-3): "
                          "13 greedy tokens after each of 1 prompt(s), 2 threads, median of 2")
    assert lines[heading + 4].startswith(f"| {bench.SYNTHETIC:<32} | ") and lines[heading + 4].endswith(
        "|        4.00 | 1.00 / 1.00 / 1.00   |")
    start = lines.index("| decoding (median over prompts) | decode tok/s | speed-up | tokens/step | accepted/step |")
    assert lines[start + 2].startswith(f"| {'off':<30} | ") and lines[start + 2].endswith(
        "|    1.00x |        1.00 |             - |")
    assert lines[start + 3].startswith(f"| {'mtp':<30} | ") and lines[start + 3].endswith(
        "|        4.00 |          3.00 |")
    assert lines[start + 5:start + 9] == ["| draft position  |     1 |     2 |     3 |",
                                          "|-----------------|-------|-------|-------|",
                                          "| proposed        |     6 |     6 |     6 |",
                                          "| acceptance rate | 1.000 | 1.000 | 1.000 |"]
    assert spec["ms_per_draft_token"] > 0 and spec["ms_per_verify"] > 0
    assert lines[start + 10].startswith(f"drafting: {spec['ms_per_draft_token']:.2f} ms per draft token "
                                        f"({100 * spec['draft_share']:.1f}% of a plain decode step)")


def test_text_prompts_by_default_one_row_each(drafter_package, stand_in_mtp, capsys, tmp_path):
    """Text prompts, tokenized by the package's tokenizer after BOS, one row each; the totals sum
    their step counts (the oracle stand-in accepts every draft); without --prompt the built-in
    text prompts are used, never random ids."""
    texts = ["one two three", "hello world"]
    result, lines = measure(drafter_package, capsys, prompts=texts, mode="mtp", draft_length=3, adaptive=False)
    spec = result["speculative"]
    assert [r["prompt"] for r in spec["prompts"]] == texts
    assert spec["steps"] == sum(r["steps"] for r in spec["prompts"]) == 12
    assert spec["acceptance_rate"] == [1.0, 1.0, 1.0] and spec["tokens_per_step"] == 4.0
    assert spec["plain_decode"] == pytest.approx(np.median([r["plain_decode"] for r in spec["prompts"]]))
    assert any(line.startswith(f"| {'one two three':<32} | ") for line in lines)

    seen = []

    def recording(argv, threads):
        if "speculative" in argv:
            seen.append(json.loads(argv[argv.index("--prompts-ids") + 1]))
        return in_process(argv, threads)

    run_bench(drafter_package, prompt_tokens=16, decode_tokens=3, threads=2, repeats=1, memory_mib=8,
              speculative={"mode": "mtp"}, runner=recording)
    chat = json.loads((drafter_package / "mlc-chat-config.json").read_text())
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(drafter_package / "tokenizer.json"))
    assert seen == [[[chat["bos_token_id"]] + tokenizer.encode(t, add_special_tokens=False).ids
                     for t in bench.TEXT_PROMPTS]]


def test_always_wrong_drafter(drafter_package, stand_in_mtp, capsys):
    stand_in_mtp.offset = 1
    result, lines = measure(drafter_package, capsys, mode="mtp", draft_length=2, adaptive=False)
    spec = result["speculative"]
    # one token per step: 12 steps a run; the last two have room for 1 and 0 draft tokens
    assert spec["steps"] == 24 and spec["proposed_at"] == [22, 20] and spec["acceptance_rate"] == [0.0, 0.0]
    assert spec["accepted_per_step"] == 0.0 and spec["tokens_per_step"] == 1.0
    assert "| acceptance rate | 0.000 | 0.000 |" in lines


def test_oracle_drafter_adaptive_draft_length(drafter_package, stand_in_mtp, capsys):
    result, lines = measure(drafter_package, capsys, mode="mtp", draft_length=1)  # the package's: adaptive [1, 8]
    spec = result["speculative"]
    # per run: drafts of 1, 2, 3 (12 tokens after the first: 2 + 3 + 4), then 2 of the policy's 4
    # (the budget's last 3 tokens), all accepted
    assert spec["steps"] == 8 and spec["proposed_at"] == [8, 6, 2] and spec["acceptance_rate"] == [1.0] * 3
    assert spec["draft_lengths"] == [1, 4] and spec["accepted_per_step"] == 2.0
    assert any(line.startswith("speculative decoding (mtp drafter, draft length adaptive in [1, 8], from 1; "
                               "used 1-4)") for line in lines)


def test_speculation_off_keeps_the_plain_bench(tiny_package, capsys):
    result, lines = measure(tiny_package[0], capsys)
    assert result["speculative"] is None and not any("speculative" in line for line in lines)
    start = lines.index(f"| {'engine':<44} | prefill tok/s | decode tok/s | peak RSS MiB |")
    assert lines[start + 2].startswith("| mlc-mtp (q0f32, TVM CPU)") and result["rows"][0]["decode"] > 0
    assert lines[start + 3] == ""  # one engine: no GGUF, no llama.cpp row


def test_the_speculative_worker_runs_in_a_child_process(drafter_package):
    """The settings reach a real child process, which loads the package's drafter with the real
    ``mtp`` loader; the stand-in library there cannot be loaded, and its one-line error comes back."""
    def child_for_speculation(argv, threads):
        return bench.run_in_child(argv, threads) if "speculative" in argv else in_process(argv, threads)

    with pytest.raises(PipelineError) as err:
        run_bench(drafter_package, prompt_tokens=16, decode_tokens=13, repeats=1,
                  speculative={"mode": "mtp"}, runner=child_for_speculation)
    assert str(err.value).startswith(f"bench: the speculative run failed: {drafter_package}"), str(err.value)


def test_speculation_needs_two_decode_tokens(drafter_package):
    with pytest.raises(PipelineError, match=r"--decode-tokens: 1, expected >= 2 with speculative decoding"):
        run_bench(drafter_package, decode_tokens=1, speculative={"mode": "mtp"}, runner=in_process)


def test_kernel_and_memory_tables(tiny_package, capsys):
    """The kernel table lists the library's functions timed on their own; bytes per token are the
    weights' bytes (the tied embedding read once, whole) plus the KV cache's, computed here from
    the weight arrays and the config; GB/s follow from them and the decode speed."""
    package = tiny_package[0]
    result, lines = measure(package, capsys)
    row = result["rows"][0]
    kernels = row["kernels_ms"]
    assert sorted(kernels) == sorted(["decode", "batch_verify_1", "batch_verify_2", "batch_verify_4",
                                      "batch_verify_8", "get_logits"])
    assert all(math.isfinite(ms) and ms > 0 for ms in kernels.values()), kernels
    start = lines.index("| kernel             |       ms |")
    assert [line[:22] for line in lines[start + 2:start + 8]] == [
        "| decode step        |", "| batch_verify(1)    |", "| batch_verify(2)    |", "| batch_verify(4)    |",
        "| batch_verify(8)    |", "| get_logits(1 row)  |"]
    assert f"batch_verify(4) / decode step: {kernels['batch_verify_4'] / kernels['decode']:.2f}x" in lines

    from tvm.contrib import tvmjs
    arrays, _ = tvmjs.load_tensor_cache(str(package), None)
    weights = sum(a.numpy().nbytes for a in arrays.values())  # q0f32, tied head: every array whole
    assert "model.embed_tokens.weight" in arrays and not any(n.startswith("lm_head") for n in arrays)
    cfg = json.loads((package / "mlc-chat-config.json").read_text())["model_config"]
    context = 16 + 13 // 2
    kv = sum(2 * cfg["num_key_value_heads"] * cfg["head_dim"] * 4
             * (min(context, cfg["sliding_window"]) if kind == "sliding_attention" else context)
             for kind in cfg["layer_types"])
    assert row["bytes"] == {"weights": weights, "kv": kv, "total": weights + kv}
    assert row["bytes_per_token"] == weights + kv
    assert row["gbps"] == pytest.approx((weights + kv) * row["decode"] / 1e9)
    memory = result["memory_read_gbps"]
    assert math.isfinite(memory) and memory > 0
    start = lines.index(f"| {'engine':<44} | MB/token | GB/s achieved | GB/s memory read | ratio |")
    assert lines[start + 2] == (f"| {row['engine']:<44} | {row['bytes_per_token'] / 1e6:8.1f} | "
                                f"{row['gbps']:13.2f} | {memory:16.2f} | {row['gbps'] / memory:5.2f} |")


def test_bytes_per_token_reads_one_row_of_gathered_tables(tmp_path):
    """With an untied head, the embedding tables count one row each (the gather), the head whole."""
    from pipeline.package.tensor_cache import write_tensor_cache

    rng = np.random.default_rng(0)
    arrays = {"model.embed_tokens.q_weight": rng.integers(0, 9, (50, 4), dtype=np.uint32),
              "model.embed_tokens.q_scale": rng.standard_normal((50, 1), dtype=np.float32),
              "model.embed_tokens_per_layer.weight": rng.standard_normal((50, 6), dtype=np.float32),
              "lm_head.weight": rng.standard_normal((50, 8), dtype=np.float32),
              "model.layers.0.mlp.down_proj.weight": rng.standard_normal((8, 16), dtype=np.float32),
              "model.norm.weight": rng.standard_normal(8, dtype=np.float32)}
    write_tensor_cache(arrays, tmp_path, {})
    config = {"num_hidden_layers": 2, "num_key_value_heads": 2, "head_dim": 4, "sliding_window": 3,
              "layer_types": ["sliding_attention", "full_attention"]}
    (tmp_path / "mlc-chat-config.json").write_text(json.dumps({"model_config": config}))
    weights = (arrays["model.embed_tokens.q_weight"][0].nbytes + arrays["model.embed_tokens.q_scale"][0].nbytes
               + arrays["model.embed_tokens_per_layer.weight"][0].nbytes + arrays["lm_head.weight"].nbytes
               + arrays["model.layers.0.mlp.down_proj.weight"].nbytes + arrays["model.norm.weight"].nbytes)
    kv = 2 * 2 * 4 * 4 * 3 + 2 * 2 * 4 * 4 * 10  # float32; the sliding layer reads its window of 3
    assert bench.decode_bytes_per_token(tmp_path, 10) == {"weights": weights, "kv": kv, "total": weights + kv}


def test_gguf_bytes_per_token(tmp_path):
    """llama.cpp reads every tensor of a GGUF with a tied head (its token_embd) once per token."""
    from tests.helpers.gguf_files import write_gguf

    path = write_gguf(tmp_path / "tiny.gguf")
    hidden, q, kv_width, ffn, vocab, head_dim = 64, 64, 32, 128, 40, 32  # the helper's float32 shapes
    values = (vocab * hidden + hidden + q * hidden + 2 * kv_width * hidden + hidden * q + 2 * head_dim
              + 4 * hidden + 3 * ffn * hidden)
    assert bench.gguf_decode_bytes_per_token(path) == 4 * values


def test_memory_read_is_a_positive_rate():
    gbps = bench.memory_read_gbps(2, mib=16, repeats=2)
    assert math.isfinite(gbps) and gbps > 0


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_busy_neighbours_run_through_the_measurements(tiny_package, capsys, monkeypatch):
    """``--busy-neighbour 2``: two busy processes run during every worker and are gone afterwards."""
    started = []
    real = bench.busy_neighbours

    @contextlib.contextmanager
    def recording(n):
        with real(n) as procs:
            started.append(procs)
            yield procs

    seen = []

    def checking_runner(argv, threads):
        seen.append([proc.poll() is None and _alive(proc.pid) for proc in started[0]])
        return in_process(argv, threads)

    monkeypatch.setattr(bench, "busy_neighbours", recording)
    run_bench(tiny_package[0], prompt_tokens=16, decode_tokens=4, threads=2, repeats=1, runner=checking_runner,
              busy_neighbour=2, memory_mib=8)
    assert seen == [[True, True], [True, True]]  # the mlc and memory workers
    assert all(proc.returncode is not None and not _alive(proc.pid) for proc in started[0])
    heading = next(line for line in capsys.readouterr().out.splitlines() if "greedy decode steps" in line)
    # the load average the busy neighbours raise is printed, and on a 2-CPU machine flagged
    assert re.fullmatch(r"16-token prompt, 4 greedy decode steps, 2 threads, median of 1, 2 busy neighbour "
                        r"process\(es\); load average \d+\.\d on \d+ CPUs at the end"
                        r"(; the machine is busy: speeds are not a quiet machine's)?", heading), heading


def test_busy_neighbours_are_reaped_even_on_error():
    with pytest.raises(RuntimeError), bench.busy_neighbours(2) as procs:
        assert len(procs) == 2 and all(proc.poll() is None for proc in procs)
        raise RuntimeError("a failed measurement")
    assert all(proc.returncode is not None and not _alive(proc.pid) for proc in procs)


def test_negative_busy_neighbour_count(tiny_package):
    with pytest.raises(PipelineError, match=r"--busy-neighbour: -1, expected a count >= 0"):
        run_bench(tiny_package[0], busy_neighbour=-1, runner=in_process)


def test_without_llama_cpp_the_bench_prints_its_own_table_and_names_the_extra(tiny_package, capsys, monkeypatch,
                                                                               tmp_path):
    """The llama.cpp peer's module missing: our engine is measured and printed all the same, then
    one line says how to install the peer; the peer is not run."""
    peers = []
    monkeypatch.setattr(bench, "missing_modules", lambda extra: ["llama_cpp"] if extra == "bench" else [])

    def runner(argv, threads):
        peers.append(argv[1])
        return in_process(argv, threads)

    result = run_bench(tiny_package[0], prompt_tokens=16, decode_tokens=13, threads=2, repeats=2,
                       gguf=tmp_path / "peer.gguf", runner=runner, memory_mib=8)
    captured = capsys.readouterr()
    assert "llama" not in peers and len(result["rows"]) == 1 and result["rows"][0]["decode"] > 0
    assert any(line.startswith("| mlc-mtp (q0f32, TVM CPU)") for line in captured.out.splitlines())
    assert captured.err.strip().splitlines()[-1].startswith(
        "llama.cpp peer left out: llama-cpp-python is not installed (pip install 'mlc-mtp[bench]'")
