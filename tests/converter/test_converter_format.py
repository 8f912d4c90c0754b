"""The streaming safetensors writer: any tensors, written in any order, read back by safetensors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from thermocline.converter.format import StreamingWriter, TensorSpec, check_digest, read_header
from thermocline.errors import ThermoclineError

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int32]
shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)
layouts = st.lists(st.tuples(st.sampled_from(DTYPES), shapes), min_size=1, max_size=6)


@settings(max_examples=30, deadline=None)
@given(layout=layouts, order=st.randoms(use_true_random=False))
def test_streamed_file_is_plain_safetensors(tmp_path_factory, layout, order):
    path = tmp_path_factory.mktemp("fmt") / "t.thermo"
    specs = [TensorSpec(f"t{i}", dtype, shape) for i, (dtype, shape) in enumerate(layout)]
    tensors = {s.name: (torch.randn(s.shape) * 100).to(s.dtype) for s in specs}
    with StreamingWriter(path, specs, {"note": "hi"}) as writer:
        for name in order.sample(list(tensors), len(tensors)):
            writer.write(name, tensors[name])
    header, _, _ = read_header(path)
    check_digest(path, header)
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["note"] == "hi"
        for name, tensor in tensors.items():
            assert torch.equal(f.get_tensor(name), tensor)


def test_missing_tensor_leaves_no_file(tmp_path):
    specs = [TensorSpec("a", torch.float32, (2,)), TensorSpec("b", torch.float32, (3,))]
    missing = pytest.raises(ThermoclineError, match="the source lacks tensors: b")
    with missing, StreamingWriter(tmp_path / "t.thermo", specs, {}) as writer:
        writer.write("a", torch.ones(2))
    assert list(tmp_path.iterdir()) == []


def test_wrong_shape_is_refused(tmp_path):
    specs = [TensorSpec("a", torch.float16, (2, 3))]
    with (
        pytest.raises(ThermoclineError, match=r"a has shape \(3, 2\), the config implies \(2, 3\)"),
        StreamingWriter(tmp_path / "t.thermo", specs, {}) as writer,
    ):
        writer.write("a", torch.ones(3, 2))
    assert list(tmp_path.iterdir()) == []
