"""Synthetic billing datasets that follow the data contract, with labelled scenarios."""

from secm.synth.anomalies import AnomalySettings
from secm.synth.generate import SynthSummary, generate, lines_for_practice

__all__ = ["AnomalySettings", "SynthSummary", "generate", "lines_for_practice"]
