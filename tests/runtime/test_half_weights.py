"""16-bit weights with fp32 activations: the GEMV kernel and whole models against fp32 ones."""

import pytest
import torch
from tiny_models import tiny_llama, tiny_opt

from thermocline.models.transformer import KVCache
from thermocline.runtime.engine import load_model
from thermocline.runtime.half_weights import HalfEmbedding, HalfLinear
from thermocline.runtime.kernels.cpu_gemv import CpuGemv

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 33), (1024, 256)])  # the last runs in chunks
def test_gemv_matches_torch(dtype, shape):
    g = torch.Generator().manual_seed(0)
    weight, x = torch.randn(shape, generator=g).to(dtype), torch.randn(shape[1], generator=g)
    torch.testing.assert_close(CpuGemv(weight)(x), weight.float() @ x, atol=1e-4, rtol=1e-4)


def test_gemv_rejects_what_it_cannot_read():
    gemv = CpuGemv(torch.randn(4, 8))
    for x in (torch.randn(8).half(), torch.randn(7), torch.randn(2, 8)):
        with pytest.raises(ValueError, match="fp32 vector of 8"):
            gemv(x)


def rounded_fp32(path, dtype):
    """The fp32 model with every weight rounded to dtype: what the 16-bit model computes."""
    model = load_model(path, "fp32").model
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).float())
    return model


def tied_llama(path):
    return tiny_llama(path, tie_word_embeddings=True)


@pytest.mark.parametrize(
    ("make", "name"), [(tiny_llama, "fp16"), (tied_llama, "bf16"), (tiny_opt, "bf16")]
)
def test_model_equals_fp32_on_rounded_weights(tmp_path, make, name):
    path, _ = make(tmp_path / "m")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[name]
    half, ref = load_model(path, name).model, rounded_fp32(path, dtype)
    assert half.new_cache(1, 1).k.dtype == torch.float32  # fp32 activations
    linears = [m for m in half.modules() if isinstance(m, HalfLinear)]
    assert linears and all(m.weight.dtype == dtype for m in linears)
    assert isinstance(half.embed, HalfEmbedding)
    assert (half.lm_head.weight is half.embed.weight) == half.cfg.tie_embeddings
    seed = torch.Generator().manual_seed(1)
    tokens = torch.randint(3, half.cfg.vocab_size, (1, 10), generator=seed)
    caches = [KVCache(m.cfg, 1, 10, torch.float32) for m in (half, ref)]
    with torch.inference_mode():
        for pos in range(10):  # one token at a time: the GEMV path, fp32 arithmetic throughout
            step = tokens[:, pos : pos + 1]
            got, want = (m(step, pos, c) for m, c in zip((half, ref), caches, strict=True))
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        # Several tokens: torch's GEMM with activations rounded to the weight dtype.
        torch.testing.assert_close(half(tokens), ref(tokens), atol=0.05, rtol=0.05)
