"""curvature."""

from .sharpness import adaptive_sharpness, average_sharpness, rho_sharpness, sharpness_battery

__all__ = ["adaptive_sharpness", "average_sharpness", "rho_sharpness", "sharpness_battery"]
