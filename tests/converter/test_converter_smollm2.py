"""The real SmolLM2 converted to a dense fp16 artifact: the same weights and the same forward."""

import pytest
import torch

from thermocline.converter import build_dense_model, convert, read_artifact
from thermocline.converter.inspect import describe_artifact
from thermocline.models import build_model


@pytest.mark.slow
def test_smollm2_dense_fp16_artifact(tmp_path, smollm2_checkpoint):
    art = read_artifact(convert("smollm2-135m", tmp_path / "smollm2.thermo", dtype="fp16"))
    restored = art.dense_state_dict()
    for name, tensor in smollm2_checkpoint.tensors():
        assert torch.equal(restored[name], tensor.half()), name
    del restored
    tokens = torch.tensor([art.tokenizer.encode("The capital of France is")])
    with torch.inference_mode():
        expected = build_model(smollm2_checkpoint, torch.float16)(tokens)
        assert torch.equal(build_dense_model(art)(tokens), expected)
    text = describe_artifact(art.path)
    assert "hot neurons 0 of 46080" in text and "fp16" in text
