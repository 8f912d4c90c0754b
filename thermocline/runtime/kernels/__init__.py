"""Neuron-sparse FFN kernels: numba on the CPU (cold neurons), Triton on the GPU (hot neurons).

Import-light on purpose: numba and triton load only when their module is imported.
"""

ACTIVATIONS = ("relu", "fatrelu", "drelu", "silu", "gelu", "gelu_tanh")
