"""Build a runnable model from a .thermo artifact: sparse (predictors) or its dense mode.

Hot neurons go to the GPU when there is one (Triton kernels), with the dense tensors the
placement put there (placed.py); cold neurons stay in the memory-mapped file and run on the CPU
(numba kernel). Without CUDA the hot block runs on the CPU too, so the same artifact runs
anywhere.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from thermocline.converter.reader import LayerFFN, NeuronBlock
from thermocline.errors import ThermoclineError
from thermocline.models.config import ModelConfig
from thermocline.models.transformer import Place, Transformer
from thermocline.placement_solver.units import format_size
from thermocline.runtime.engine import LoadedModel, parse_dtype, prepare_cpu_model
from thermocline.runtime.placed import GpuResidents, place_residents
from thermocline.runtime.sparse_ffn import SparseFeedForward

# From this many prompt tokens on, one GEMM over every neuron with the predicted masks
# applied beats the per-token sparse kernels on the CPU (BENCHMARKS.md, "Prefill switch":
# SmolLM2, benchmarks/prefill_switch.py). torch's 16-bit CPU GEMM is slow, which moves the
# switch later for 16-bit weights.
DENSE_MIN_TOKENS = {torch.float32: 3, torch.float16: 5, torch.bfloat16: 5}


def _executor(block: NeuronBlock, cfg: ModelConfig, threshold: float, device: torch.device):
    if block.n == 0:
        return None
    args = (
        block.gate,
        block.up,
        block.down_t,
        cfg.activation,
        threshold,
        cfg.activation_threshold,
        block.up_bias,
    )
    if device.type == "cuda":
        from thermocline.runtime.kernels.triton_sparse import TritonSparseFFN

        return TritonSparseFFN(*args)
    from thermocline.runtime.kernels.cpu_sparse import CpuSparseFFN

    return CpuSparseFFN(*args)


def _to(block: NeuronBlock, device: torch.device) -> NeuronBlock:
    move = lambda t: None if t is None else t.to(device)  # noqa: E731
    return NeuronBlock(move(block.gate), move(block.up), move(block.down_t), move(block.up_bias))


def sparse_transformer(
    cfg: ModelConfig,
    dense: dict[str, torch.Tensor],
    layers: list[LayerFFN],
    use_predictors: bool = True,
    hot_device: str | torch.device | None = None,
) -> Transformer:
    """A Transformer whose FFNs are SparseFeedForward over the artifact's hot/cold blocks.

    With use_predictors False every neuron is computed: the dense mode of the same engine,
    the baseline of every speed claim.
    """
    device = torch.device(hot_device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with torch.device("meta"):
        model = Transformer(cfg)
    for block, layer in zip(model.layers, layers, strict=True):
        predictor, predictor_bytes = None, 0
        if use_predictors:
            if layer.predictor is None:
                raise ThermoclineError("this artifact has no predictors: run it in dense mode")
            stored = layer.predictor
            predictor_bytes = sum(w.numel() * w.element_size() for w in (stored.w1, stored.w2))
            # fp32 copies on the CPU, where the FFN input is and where the mask is needed
            # first (the cold ids); small, and half-precision GEMV is slow on CPUs.
            predictor = dataclasses.replace(stored, w1=stored.w1.float(), w2=stored.w2.float())
        hot = _to(layer.hot, device)
        block.ffn = SparseFeedForward(
            cfg,
            hot,
            layer.cold,
            layer.threshold,
            predictor,
            predictor_bytes,
            _executor(hot, cfg, layer.threshold, device),
            _executor(layer.cold, cfg, layer.threshold, torch.device("cpu")),
            layer.down_bias,
            device,
            DENSE_MIN_TOKENS[layer.cold.up.dtype if layer.cold.n else hot.up.dtype],
        )
    missing, unexpected = model.load_state_dict(dense, strict=False, assign=True)
    if unexpected or [m for m in missing if not (cfg.tie_embeddings and m == "lm_head.weight")]:
        raise ThermoclineError(
            f"artifact tensors do not fit the model: missing {missing}, unexpected {unexpected}"
        )
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    model.reset_buffers()
    return model.requires_grad_(False).eval()


def load_artifact_model(
    path: Path,
    dtype: str = "fp32",
    max_seq_len: int | None = None,
    dense_mode: bool = False,
    gpu: Place | None = None,
) -> LoadedModel:
    """The artifact's engine; dense_mode computes every neuron (no predictors).

    `gpu` is where the hot neurons and the placement's GPU residents run (placed.py): by
    default the CUDA GPU when there is one, in the artifact's dtype whatever `dtype` asks of
    the CPU (the placement's budget counted bytes in it); without one, the CPU runs all.
    """
    from thermocline.converter import read_artifact

    artifact = read_artifact(path)
    if dtype not in ("fp32", artifact.dtype):
        raise ThermoclineError(
            f"{path} holds {artifact.dtype} weights; run it as {artifact.dtype} or fp32"
        )
    cfg = artifact.config
    if max_seq_len is not None:
        cfg = ModelConfig.from_dict({**cfg.to_dict(), "max_seq_len": max_seq_len})
    if gpu is None and torch.cuda.is_available():  # in the dtype the placement budgeted
        gpu = Place(torch.device("cuda"), parse_dtype(artifact.dtype))
    # fp32 copies of the non-FFN weights, or the stored 16-bit ones straight from the map.
    dense = {k: v.float() if dtype == "fp32" else v for k, v in artifact.dense.items()}
    use_predictors = not dense_mode and artifact.layers[0].predictor is not None
    try:
        model = sparse_transformer(
            cfg, dense, artifact.layers, use_predictors, gpu.device if gpu else "cpu"
        )
        if gpu is not None and artifact.placement is not None:
            residents = GpuResidents.parse(artifact.placement["gpu_residents"], cfg.n_layers)
            place_residents(model, residents, gpu)
    except torch.OutOfMemoryError:
        budget = format_size((artifact.placement or {}).get("vram_budget_bytes", 0))
        raise ThermoclineError(
            f"the GPU ran out of memory holding what {path.name}'s placement puts there (a "
            f"{budget} budget): re-run `thermocline place` with a smaller --vram-budget and "
            "convert again, or hide the GPU (CUDA_VISIBLE_DEVICES=) to run on the CPU"
        ) from None
    return LoadedModel(
        str(path), prepare_cpu_model(model, dtype), artifact.tokenizer,
        "sparse" if use_predictors else "dense",
    )  # fmt: skip
