"""curvature."""

from .blocks import block_sharpness
from .sharpness import adaptive_sharpness, average_sharpness, rho_sharpness, sharpness_battery

__all__ = ["adaptive_sharpness", "average_sharpness", "block_sharpness", "rho_sharpness", "sharpness_battery"]
