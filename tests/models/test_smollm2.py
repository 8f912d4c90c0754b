"""The default real model, from its GGUF: against transformers' own GGUF loader."""

import pytest
import torch

from thermocline.corpus import read_text
from thermocline.models.checkpoint import resolve_model_path
from thermocline.runtime.generate import SamplingParams, stream_text
from thermocline.runtime.perplexity import perplexity

pytestmark = pytest.mark.slow
EVAL_TOKENS = 8192  # a prefix of the eval split keeps CI short; BENCHMARKS.md has the full split


@pytest.fixture(scope="module")
def reference():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path("smollm2-135m")
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    return model.eval(), AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def test_tokenizer_matches_transformers(smollm2_checkpoint, reference):
    text = "The capital of France is Paris. 12345 numbers, émojis 🙂 and <|im_start|>user\nhi<|im_end|>"
    assert smollm2_checkpoint.tokenizer.encode(text) == reference[1](text)["input_ids"]


def test_logits_match_transformers(smollm2, smollm2_checkpoint, reference):
    ids = torch.tensor(
        [smollm2_checkpoint.tokenizer.encode("Rivers flow to the sea because gravity")]
    )
    with torch.inference_mode():
        torch.testing.assert_close(smollm2(ids), reference[0](ids).logits, atol=1e-4, rtol=0)


def test_greedy_says_paris(smollm2, smollm2_checkpoint):
    tok = smollm2_checkpoint.tokenizer
    text = "".join(
        stream_text(smollm2, tok, tok.encode("The capital of France is"), SamplingParams(20))
    )
    assert "Paris" in text


def test_eval_perplexity_matches_transformers(smollm2, smollm2_checkpoint, reference):
    ids = smollm2_checkpoint.tokenizer.encode(read_text("wikitext-2", "eval"))
    ours = perplexity(smollm2, ids, window=512, max_tokens=EVAL_TOKENS)

    class HFLogits(torch.nn.Module):  # the same windows through transformers
        cfg = smollm2.cfg

        def forward(self, tokens):
            return reference[0](tokens).logits

    theirs = perplexity(HFLogits(), ids, window=512, max_tokens=EVAL_TOKENS)
    assert ours.tokens == theirs.tokens == (EVAL_TOKENS // 512) * 511
    assert abs(ours.perplexity / theirs.perplexity - 1) < 0.005
    assert 5 < ours.perplexity < 100  # a sane language model on Wikipedia text
