"""Reading a package's weights (pipeline/package/tensor_cache.py): the CPU path reads each record
straight into its tensor; it must give what TVM's own loader gives, byte for byte."""

from __future__ import annotations

import numpy as np
import tvm
from tvm.contrib import tvmjs

from pipeline.package.tensor_cache import read_tensor_cache, write_tensor_cache


def test_cpu_reader_equals_tvms_loader(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "big.q_weight": rng.integers(-127, 128, (3000, 3000), dtype=np.int8),  # 9 MB: shards of several records
        "a.q_weight": rng.integers(0, 2**32, (64, 40), dtype=np.uint32),
        "a.q_scale": rng.standard_normal((64, 10)).astype(np.float32),
        "norm.weight": rng.standard_normal(7).astype(np.float16),
        "ids": np.arange(5, dtype=np.int32),
        "scalar_like": np.array([1.5], np.float32),
    }
    arrays.update({f"layer{i}.w": rng.standard_normal((1000, 1000)).astype(np.float32) for i in range(9)})  # > 32 MB
    write_tensor_cache(arrays, tmp_path, {})
    ours = read_tensor_cache(tmp_path, tvm.cpu())
    tvms, _ = tvmjs.load_tensor_cache(str(tmp_path), tvm.cpu())
    assert ours.keys() == tvms.keys() == arrays.keys()
    for name, array in arrays.items():
        got = ours[name].numpy()
        assert got.dtype == array.dtype and got.shape == array.shape, name
        np.testing.assert_array_equal(got, array)
        np.testing.assert_array_equal(got, tvms[name].numpy())
