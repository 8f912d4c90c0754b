"""Per-layer predictors of the active FFN neurons: low-rank MLPs of adaptive rank."""

from thermocline.predictor_trainer.config import TrainConfig
from thermocline.predictor_trainer.evaluate import MaskStats, predicted_masks, predicted_masks_from
from thermocline.predictor_trainer.io import load_predictors, save_predictors
from thermocline.predictor_trainer.model import LayerPredictor, Predictors
from thermocline.predictor_trainer.train import train_predictors

__all__ = [
    "LayerPredictor",
    "MaskStats",
    "Predictors",
    "TrainConfig",
    "load_predictors",
    "predicted_masks",
    "predicted_masks_from",
    "save_predictors",
    "train_predictors",
]
