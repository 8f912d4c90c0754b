"""Profiler: corpus -> per-neuron activation counts, thresholds, skew, predictor training data."""

from thermocline.profiler.artifact import Profile, load_profile
from thermocline.profiler.oracle import SparsityMeter, apply_thresholds, measure_sparsity
from thermocline.profiler.profile import ProfileConfig, profile_model
from thermocline.profiler.shards import iter_layer_shards, load_layer_data

__all__ = [
    "Profile",
    "ProfileConfig",
    "SparsityMeter",
    "apply_thresholds",
    "iter_layer_shards",
    "load_layer_data",
    "load_profile",
    "measure_sparsity",
    "profile_model",
]
