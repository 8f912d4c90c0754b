"""Human-readable summaries of what a checkpoint holds."""

from __future__ import annotations

from pathlib import Path

from thermocline.models.checkpoint import load_checkpoint, resolve_model_path


def describe_checkpoint(spec: str | Path) -> str:
    """Architecture, sizes, dtype and tensors of a checkpoint (or a .thermo artifact)."""
    path = resolve_model_path(spec)
    if path.suffix == ".thermo":
        from thermocline.converter.inspect import describe_artifact

        return describe_artifact(path)
    ckpt = load_checkpoint(spec)
    cfg = ckpt.config
    lines = [
        f"{ckpt.name}: {ckpt.format} checkpoint at {ckpt.path}",
        f"  architecture {cfg.arch}, activation {cfg.activation}, source dtype {ckpt.source_dtype}",
        f"  layers {cfg.n_layers}, d_model {cfg.d_model}, d_ff {cfg.d_ff} neurons/layer, "
        f"heads {cfg.n_heads} (kv {cfg.n_kv_heads}, dim {cfg.head_dim}), vocab {cfg.vocab_size}",
        f"  context {cfg.max_seq_len}, rope theta {cfg.rope_theta}, scaling {cfg.rope_scaling}, "
        f"tied embeddings {cfg.tie_embeddings}",
        f"  digest {ckpt.digest[:16]}",
        "  tensors:",
    ]
    total = 0
    for name, tensor in ckpt.tensors():
        total += tensor.numel()
        lines.append(f"    {name:40s} {tuple(tensor.shape)}")
    lines.insert(5, f"  parameters {total / 1e6:.1f} M")
    return "\n".join(lines)
