"""TrainConfig: how the per-layer predictors are trained and sized."""

from __future__ import annotations

from dataclasses import dataclass

from thermocline.errors import ThermoclineError

# Small ranks first: SmolLM2's 10% byte budget allows rank <= 125; 7B models afford ~900.
DEFAULT_RANKS = (16, 32, 64, 96, 128, 256, 512, 1024)


@dataclass
class TrainConfig:
    recall: float = 0.95  # held-out recall the logit threshold is tuned to (over all pairs)
    ranks: tuple[int, ...] = DEFAULT_RANKS  # the ladder the rank search walks up
    max_bytes_share: float = 0.1  # a layer's predictor may take at most this share of its FFN bytes
    tolerance: float = 0.01  # a larger rank must raise predicted sparsity by this much to be chosen
    epochs: int = 8  # at most, for the chosen rank; early stopping on held-out loss may end sooner
    search_epochs: int = 2  # epochs every ladder rank trains before the choice (the chosen goes on)
    patience: int = 1  # epochs without a better held-out loss before stopping
    batch: int = 1024
    lr: float = 3e-3
    weight_decay: float = 0.01
    max_tokens: int | None = 50_000  # tokens per layer read from the shards (train + held out)
    holdout: float = 0.2  # share of those tokens (the last ones) held out
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    threads: int = 0  # CPU threads; 0: all cores

    def __post_init__(self) -> None:
        self.ranks = tuple(sorted(set(self.ranks)))
        if not self.ranks or self.ranks[0] < 1:
            raise ThermoclineError("--ranks needs at least one positive rank, e.g. 16,32,64")
        if not 0 < self.recall < 1:
            raise ThermoclineError(f"--recall must be in (0, 1), got {self.recall}")
        if not 0 < self.holdout < 1:
            raise ThermoclineError(f"--holdout must be in (0, 1), got {self.holdout}")
        if self.max_bytes_share <= 0:
            raise ThermoclineError("--max-bytes-share must be positive, e.g. 0.1")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ThermoclineError(f"--device must be auto, cpu or cuda, not {self.device!r}")
        if min(self.epochs, self.search_epochs, self.batch) < 1 or (
            self.max_tokens is not None and self.max_tokens < 2
        ):
            raise ThermoclineError(
                "--epochs, --search-epochs, --batch and --max-tokens must be positive"
            )

    def torch_device(self) -> str:
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise ThermoclineError(
                "--device cuda given but no CUDA GPU is available; use --device cpu"
            )
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device
