"""Damaged or doctored .thermo files: each is refused with a message that names the problem."""

import struct

import pytest
import torch
from converter_helpers import hot_ids, rewrite_header, split_file, write_placement
from tiny_models import tiny_llama

from thermocline.converter import convert, read_artifact
from thermocline.errors import ThermoclineError
from thermocline.models import load_checkpoint


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A split fp16 artifact of a tiny LLaMA, converted once for all the tests here."""
    tmp = tmp_path_factory.mktemp("corrupt")
    checkpoint = load_checkpoint(tiny_llama(tmp / "ckpt", "relu")[0])
    placement = write_placement(
        tmp / "placement.json", checkpoint, hot_ids(checkpoint), dtype="fp16"
    )
    path = convert(str(checkpoint.path), tmp / "good.thermo", placement=placement)
    read_artifact(path)  # the untouched file is fine
    return path


def test_truncated_file(artifact, tmp_path):
    bad = tmp_path / "bad.thermo"
    bad.write_bytes(artifact.read_bytes()[:-1000])
    with pytest.raises(ThermoclineError, match="truncated: the tensors need"):
        read_artifact(bad)
    bad.write_bytes(artifact.read_bytes()[:100])  # cut inside the header
    with pytest.raises(ThermoclineError, match="header of .* runs past the end .* truncated"):
        read_artifact(bad)


def test_flipped_byte_in_header(artifact, tmp_path):
    raw = bytearray(artifact.read_bytes())
    (length,) = struct.unpack("<Q", raw[:8])
    at = raw.index(b"chat_template", 8, 8 + length) + 2  # inside a string: still valid JSON
    raw[at] ^= 0x01
    bad = tmp_path / "bad.thermo"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ThermoclineError, match="header digest mismatch"):
        read_artifact(bad)
    raw[at] ^= 0x01
    raw[raw.index(b'"__metadata__"')] = ord("{")  # breaks the JSON itself
    bad.write_bytes(bytes(raw))
    with pytest.raises(ThermoclineError, match="header is not valid JSON"):
        read_artifact(bad)


def test_unknown_version(artifact, tmp_path):
    def edit(header):
        header["__metadata__"]["version"] = "99"

    with pytest.raises(ThermoclineError, match="format version '99' is not supported"):
        read_artifact(rewrite_header(artifact, edit, tmp_path / "bad.thermo"))


def test_missing_tensor(artifact, tmp_path):
    def edit(header):
        del header["layers.1.ffn.cold.gate"]

    with pytest.raises(ThermoclineError, match="missing tensor\\(s\\) layers.1.ffn.cold.gate"):
        read_artifact(rewrite_header(artifact, edit, tmp_path / "bad.thermo"))


def test_shape_contradicts_config(artifact, tmp_path):
    def edit(header):
        header["layers.0.attn.wo.weight"]["shape"] = [64, 32]

    with pytest.raises(
        ThermoclineError,
        match=r"layers.0.attn.wo.weight has shape \(64, 32\), the config implies \(64, 64\)",
    ):
        read_artifact(rewrite_header(artifact, edit, tmp_path / "bad.thermo"))


def test_permutation_with_repeated_index(artifact, tmp_path):
    header, data = split_file(artifact)
    begin = header["layers.1.ffn.perm"]["data_offsets"][0]
    perm = torch.frombuffer(bytearray(data[begin : begin + 8]), dtype=torch.int32)
    repeated = torch.tensor([perm[0], perm[0]], dtype=torch.int32).numpy().tobytes()
    raw = artifact.read_bytes()
    start = len(raw) - len(data) + begin
    bad = tmp_path / "bad.thermo"
    bad.write_bytes(raw[:start] + repeated + raw[start + 8 :])
    with pytest.raises(ThermoclineError, match="layers.1.ffn.perm is not a permutation of 0..95"):
        read_artifact(bad)


def test_not_an_artifact(tmp_path):
    bad = tmp_path / "bad.thermo"
    bad.write_bytes(b"\xff" * 64)
    with pytest.raises(ThermoclineError, match="header length .* not a .thermo file"):
        read_artifact(bad)
    with pytest.raises(ThermoclineError, match="not found; run `thermocline convert`"):
        read_artifact(tmp_path / "missing.thermo")
