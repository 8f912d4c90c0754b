"""Triton kernels vs the torch reference; imported by test_triton_sparse.py, which explains how."""

import pytest
import torch

from thermocline.runtime.kernels import ACTIVATIONS
from thermocline.runtime.kernels.reference import sparse_ffn_reference
from thermocline.runtime.kernels.triton_sparse import TritonSparseFFN

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
N, D = 72, 48  # not multiples of the blocks below: masks are exercised
BLOCKS = dict(block_d=32, block_k=16)  # block_n: auto, 4 to 16 rows here


def make_layer(dtype: torch.dtype, gated: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    gate, up, down_t = (torch.randn(N, D, generator=g).to(dtype) / D**0.5 for _ in range(3))
    bias = None if gated else torch.randn(N, generator=g) * 0.1
    return [t if t is None else t.to(DEVICE) for t in ((gate if gated else None), up, down_t, bias)]


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0], ids=["none", "half", "all"])
@pytest.mark.parametrize("threshold", [0.0, 0.05])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize(
    "activation, gated", [(a, g) for a in ACTIVATIONS for g in (True, False) if g or a != "drelu"]
)
def test_matches_reference(activation, gated, dtype, threshold, fraction):
    gate, up, down_t, bias = make_layer(dtype, gated, seed=len(activation))
    g = torch.Generator().manual_seed(1)
    active = torch.randperm(N, generator=g)[: int(N * fraction)].sort().values.to(DEVICE)
    x = torch.randn(D, generator=g).to(DEVICE)
    ffn = TritonSparseFFN(gate, up, down_t, activation, threshold, 0.1, bias, **BLOCKS)
    expected = sparse_ffn_reference(x, gate, up, down_t, active, activation, threshold, 0.1, bias)
    torch.testing.assert_close(ffn(x, active), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_batch_int32_ids_and_out(dtype):
    gate, up, down_t, _ = make_layer(dtype, True, seed=0)
    ffn = TritonSparseFFN(gate, up, down_t, "silu", 0.01, **BLOCKS)
    x, active = torch.randn(3, D).to(DEVICE), torch.arange(1, N, 3, dtype=torch.int32).to(DEVICE)
    out = torch.full((3, D), 7.0, device=DEVICE)  # overwritten, not accumulated into
    assert ffn(x, active, out) is out
    torch.testing.assert_close(
        out, sparse_ffn_reference(x, gate, up, down_t, active, "silu", 0.01), atol=1e-5, rtol=1e-4
    )
