"""Synthetic billing datasets that follow the data contract, with labelled scenarios."""

from secm.synth.generate import SynthSummary, generate

__all__ = ["SynthSummary", "generate"]
