"""The drafters' device-side context (``pipeline/runtime/drafters/context.py``) against a numpy
model of the same appends, skips, truncations and reads, on the CPU device (the copies are TVM's
device-to-device copies between views at byte offsets, the same calls a GPU gets)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.runtime.drafters.context import DeviceRows, MTPContext, copy_rows

# one operation: ("append", rows, skip) | ("truncate", length) | ("read", start)
OPERATIONS = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(0, 23), st.integers(0, 3)),
    st.tuples(st.just("truncate"), st.integers(0, 60)),
    st.tuples(st.just("read"), st.integers(-3, 60)),
), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(operations=OPERATIONS, dtype=st.sampled_from(["float32", "float16", "int32"]))
def test_device_rows_follow_a_numpy_model(operations, dtype):
    """Rows written by appends (capacity doubling from 4), skipped rows left unread, truncation,
    and reads from any start equal what a numpy list of rows holds."""
    rng = np.random.default_rng(len(operations))
    rows = DeviceRows((3, 2), dtype, tvm.cpu(0), capacity=4)
    model = np.zeros((0, 3, 2), dtype)
    written = np.zeros(0, bool)
    for op in operations:
        if op[0] == "append":
            _, m, skip = op
            new = (rng.standard_normal((m, 3, 2)) * 100).astype(dtype)
            rows.append(tvm.runtime.tensor(new), skip=skip)
            model = np.concatenate([model, np.zeros((skip, 3, 2), dtype), new])
            written = np.concatenate([written, np.zeros(skip, bool), np.ones(m, bool)])
        elif op[0] == "truncate":
            rows.truncate(op[1])
            model, written = model[:op[1]], written[:op[1]]
        else:
            start = min(op[1], len(model))
            got = rows.rows(start).numpy()
            want, keep = model[max(start, 0):], written[max(start, 0):]
            assert got.shape == want.shape
            np.testing.assert_array_equal(got[keep], want[keep])
        assert rows.length == len(model)


def test_device_rows_refuse_another_row_shape_or_dtype():
    rows = DeviceRows((4,), "float32", tvm.cpu(0))
    with pytest.raises(ValueError, match="expected"):
        rows.append(tvm.runtime.tensor(np.zeros((2, 5), np.float32)))
    with pytest.raises(ValueError, match="expected"):
        rows.append(tvm.runtime.tensor(np.zeros((2, 4), np.float16)))


def test_copy_rows_copies_a_middle_range():
    data = np.arange(40, dtype=np.float32).reshape(10, 4)
    out = copy_rows(tvm.runtime.tensor(data), 3, 7)
    np.testing.assert_array_equal(out.numpy(), data[3:7])
    assert copy_rows(tvm.runtime.tensor(data), 5, 5).shape == (0, 4)


def test_context_keeps_hidden_states_of_returned_positions_only():
    """A prefill returning the last position's hidden state (m = 1 of n = 5), then a verify
    returning all of its 3: positions 0-3 are unknown, 4-7 known; a roll-back forgets 6-7."""
    context = MTPContext()
    kv = [tvm.runtime.tensor(np.full((5, 1, 2), i, np.float32)) for i in range(4)]
    context.append(tvm.runtime.tensor(np.full((1, 3), 4.0, np.float32)), kv)
    hidden = np.arange(9, dtype=np.float32).reshape(3, 3)
    context.append(tvm.runtime.tensor(hidden), [tvm.runtime.tensor(np.full((3, 1, 2), 9, np.float32))] * 4)
    assert context.length == 8
    np.testing.assert_array_equal(context.hidden_states(4, 8).numpy(), np.concatenate([np.full((1, 3), 4.0), hidden]))
    np.testing.assert_array_equal(context.last_hidden().numpy(), hidden[-1:])
    with pytest.raises(RuntimeError, match="not all known"):
        context.hidden_states(3, 5)
    np.testing.assert_array_equal(context.kv["v_full"].rows(6).numpy(), np.full((2, 1, 2), 9))
    context.truncate(6)
    np.testing.assert_array_equal(context.last_hidden().numpy(), hidden[:1])
    assert context.kv["k_sliding"].rows().shape == (6, 1, 2)
    context.reset()
    with pytest.raises(RuntimeError, match="unknown"):
        context.last_hidden()
