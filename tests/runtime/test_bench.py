"""``mlc-mtp bench`` with speculative decoding, its workers run in this process (so that the
stand-in drafter can be injected): the tables' layout and the step counts, which are exact for
greedy stand-ins.  Speeds are printed, not checked."""

from __future__ import annotations

import pytest

from pipeline.errors import PipelineError
from pipeline.runtime import bench
from pipeline.runtime.bench import run_bench, run_worker


def in_process(argv, threads):
    del threads
    return run_worker(argv)


def measure(package, capsys, **speculative):
    result = run_bench(package, prompt_tokens=16, decode_tokens=13, threads=2, repeats=2,
                       speculative=speculative or None, runner=in_process)
    return result, capsys.readouterr().out.splitlines()


def test_oracle_drafter_fixed_draft_length(drafter_package, stand_in_mtp, capsys):
    result, lines = measure(drafter_package, capsys, mode="mtp", draft_length=3, adaptive=False)
    spec = result["speculative"]
    # per run: 12 tokens after the first, in 3 steps of 3 accepted drafts + 1; summed over 2 runs
    assert spec["steps"] == 6 and spec["proposed_at"] == [6, 6, 6] and spec["acceptance_rate"] == [1.0, 1.0, 1.0]
    assert spec["accepted_per_step"] == 3.0 and spec["tokens_per_step"] == 4.0 and spec["draft_lengths"] == [3, 3]
    assert spec["speed_up"] == spec["speculative_decode"] / spec["plain_decode"] > 0
    assert [row["engine"] for row in result["rows"]] == ["mlc-mtp (q0f32, TVM CPU)"]  # no GGUF: no llama.cpp row
    start = lines.index("| decoding          | decode tok/s | speed-up | tokens/step | accepted/step |")
    assert lines[start - 2] == ("speculative decoding (mtp drafter, draft length fixed at 3; used 3-3): "
                                "13 greedy tokens after a 16-token prompt, 2 threads, median of 2")
    assert lines[start + 2].startswith("| off               | ") and lines[start + 2].endswith(
        "|    1.00x |        1.00 |             - |")
    assert lines[start + 3].startswith("| mtp               | ") and lines[start + 3].endswith(
        "|        4.00 |          3.00 |")
    assert lines[start + 5:start + 9] == ["| draft position  |     1 |     2 |     3 |",
                                          "|-----------------|-------|-------|-------|",
                                          "| proposed        |     6 |     6 |     6 |",
                                          "| acceptance rate | 1.000 | 1.000 | 1.000 |"]


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
    assert lines[-1].startswith("| mlc-mtp (q0f32, TVM CPU)") and result["rows"][0]["decode"] > 0


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
