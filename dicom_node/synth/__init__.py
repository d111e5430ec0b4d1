"""Synthetic [18F]PSMA-1007 PET/CT studies with known ground truth, for tests, demos and benchmarks."""

from dicom_node.synth.study import GroundTruth, SynthOptions, generate_study

__all__ = ["GroundTruth", "SynthOptions", "generate_study"]
