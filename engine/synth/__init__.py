"""The synthetic data generator behind ``centile generate`` and ``make demo``."""

from centile.synth.generate import GenerateResult, SynthParams, generate

__all__ = ["GenerateResult", "SynthParams", "generate"]
