"""thermocline: run LLMs with hot neurons on the GPU and cold neurons on the CPU."""

from thermocline.errors import ThermoclineError

__all__ = ["ThermoclineError"]
__version__ = "0.1.0"
