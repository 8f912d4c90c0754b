"""Converter: checkpoint + placement + predictors + profile -> one packed model.thermo file.

`convert` writes it (writer.py), `read_artifact` validates and memory-maps it (reader.py),
`build_dense_model` rebuilds the dense Transformer from it, `describe_artifact` summarizes it.
"""

from thermocline.converter.reader import (
    Artifact,
    LayerFFN,
    NeuronBlock,
    Predictor,
    build_dense_model,
    read_artifact,
)
from thermocline.converter.writer import convert

__all__ = [
    "Artifact",
    "LayerFFN",
    "NeuronBlock",
    "Predictor",
    "build_dense_model",
    "convert",
    "read_artifact",
]
