"""SmolLM2 at a 50% target: realized sparsity and oracle-threshold perplexity on the eval split."""

import pytest

from thermocline.corpus import read_text
from thermocline.profiler import ProfileConfig, apply_thresholds, measure_sparsity, profile_model
from thermocline.runtime.perplexity import perplexity

pytestmark = pytest.mark.slow
EVAL_TOKENS = 8192  # a prefix of the eval split keeps CI short


def test_oracle_thresholds_on_eval(tmp_path, smollm2, smollm2_checkpoint):
    config = ProfileConfig(
        tokens=16_384, calib_tokens=8192, train_tokens=4096, target_sparsity=0.5, progress=False
    )
    out = profile_model("smollm2-135m", "wikitext-2", tmp_path / "profile", config)
    ids = smollm2_checkpoint.tokenizer.encode(read_text("wikitext-2", "eval"))
    dense = perplexity(smollm2, ids, window=512, max_tokens=EVAL_TOKENS)
    try:
        apply_thresholds(smollm2, out)
        with measure_sparsity(smollm2) as meter:
            sparse = perplexity(smollm2, ids, window=512, max_tokens=EVAL_TOKENS)
    finally:
        smollm2.reset_buffers()  # the session's model is shared: back to dense
    print(
        f"eval sparsity {meter.sparsity:.4f}, perplexity {sparse.perplexity:.3f} vs dense {dense.perplexity:.3f}"
    )
    assert abs(meter.sparsity - 0.5) < 0.03
    assert sparse.perplexity < 1.05 * dense.perplexity
