"""PSMA PET/CT recurrence node: DICOM networking, study assembly, scheduling, results, sending, CLI.

Research software: nothing this package emits is for diagnostic use.
"""

__version__ = "0.1.0"
