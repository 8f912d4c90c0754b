"""The numba CPU kernel equals the torch reference: every activation, dtype and active set."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from thermocline.models.config import ACTIVATIONS as MODEL_ACTIVATIONS
from thermocline.runtime.kernels import ACTIVATIONS
from thermocline.runtime.kernels.cpu_sparse import CpuSparseFFN, sparse_ffn_kernel
from thermocline.runtime.kernels.reference import sparse_ffn_reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def make_layer(n: int, d: int, dtype: torch.dtype, gated: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    gate, up, down_t = (torch.randn(n, d, generator=g).to(dtype) / d**0.5 for _ in range(3))
    bias = None if gated else torch.randn(n, generator=g) * 0.1
    return (gate if gated else None), up, down_t, bias


def test_activation_names_match_the_models():
    assert ACTIVATIONS == MODEL_ACTIVATIONS


@settings(max_examples=60, deadline=None)
@given(
    activation=st.sampled_from(ACTIVATIONS),
    dtype=st.sampled_from(DTYPES),
    gated=st.booleans(),
    threshold=st.sampled_from([0.0, 0.05]),
    n=st.integers(1, 70),
    d=st.integers(1, 40),
    batch=st.sampled_from([0, 1, 3]),  # 0: x is [d]
    index_dtype=st.sampled_from([torch.int32, torch.int64]),
    data=st.data(),
)
def test_matches_reference(activation, dtype, gated, threshold, n, d, batch, index_dtype, data):
    gated = gated or activation == "drelu"
    gate, up, down_t, bias = make_layer(n, d, dtype, gated, data.draw(st.integers(0, 2**16)))
    ids = data.draw(st.sets(st.integers(0, n - 1)) | st.just(set(range(n))), label="active")
    active = torch.tensor(sorted(ids), dtype=index_dtype)
    x = torch.randn(*([batch] if batch else []), d)
    ffn = CpuSparseFFN(gate, up, down_t, activation, threshold, fatrelu_threshold=0.1, bias=bias)
    expected = sparse_ffn_reference(x, gate, up, down_t, active, activation, threshold, 0.1, bias)
    torch.testing.assert_close(ffn(x, active), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_and_thread_chunks(dtype):
    gate, up, down_t, _ = make_layer(1024, 128, dtype, True, 0)
    ffn = CpuSparseFFN(gate, up, down_t, "silu", threshold=0.01)
    x, active = torch.randn(2, 128), torch.arange(0, 1024, 2)
    expected = sparse_ffn_reference(x, gate, up, down_t, active, "silu", 0.01)
    out = torch.full((2, 128), 7.0)  # overwritten, not accumulated into
    assert ffn(x, active, out) is out
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    # Three chunks with per-chunk partial sums, whatever this machine's thread count.
    partial = np.empty((3, 2, 128), np.float32)
    addresses = (x.data_ptr(), active.data_ptr(), out.data_ptr(), 2, active.numel())
    weights = (ffn.gate, ffn.up, ffn.down_t, ffn.bias, ffn.act, ffn.t, ffn.tau)
    sparse_ffn_kernel(*addresses, *weights, 3, partial)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


def test_rejects_what_it_cannot_run():
    gate, up, down_t, _ = make_layer(4, 8, torch.float32, True, 0)
    with pytest.raises(ValueError, match="drelu"):
        CpuSparseFFN(None, up, down_t, "drelu")
    with pytest.raises(ValueError, match="activation"):
        CpuSparseFFN(gate, up, down_t, "swish")
    with pytest.raises(ValueError, match="int8"):
        CpuSparseFFN(gate.to(torch.int8), up.to(torch.int8), down_t.to(torch.int8), "relu")
    ffn, active = CpuSparseFFN(gate, up, down_t, "relu"), torch.arange(4)
    for x in (
        torch.randn(8, 2)[:, 0],
        torch.randn(8).half(),
        torch.randn(7),
    ):  # raw addresses: checked
        with pytest.raises(ValueError, match="contiguous"):
            ffn(x, active)


def test_torch_keeps_its_thread_count(tmp_path):
    """Starting numba's OpenMP layer (the first kernel built in a process) resets the OpenMP
    runtime torch shares, once torch has started it; the kernels put torch's count back. A
    fresh process, since this one may have started numba's layer already."""
    code = (
        "import torch; torch.set_num_threads(1); torch.randn(1 << 20).sum()\n"  # OpenMP up
        "from thermocline.runtime.kernels.cpu_sparse import CpuSparseFFN\n"
        "w = torch.randn(8, 4); CpuSparseFFN(w, w, w, 'silu')(torch.randn(4), torch.arange(8))\n"
        "print(torch.get_num_threads())\n"
    )
    env = {**os.environ, "NUMBA_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1"]
