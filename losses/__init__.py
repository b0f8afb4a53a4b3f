"""Losses for RLVR: advantages, EAPO credit shaping, four-quadrant tools, policy losses, aggregation.

Imports only torch, numpy, the stdlib and ``core`` (no Ray, no vLLM). Public entry point: ``build_algorithm(cfg)``.
"""
from .aggregation import Normalizer
from .registry import algorithm_defaults, build_algorithm, known_algorithms, register
from .types import Credit, LossOutput

__all__ = ["algorithm_defaults", "build_algorithm", "known_algorithms", "register", "Normalizer", "Credit", "LossOutput"]
