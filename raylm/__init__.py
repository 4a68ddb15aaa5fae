"""raylm: find the best facial-landmark detector for real faces trained on synthetic faces."""

__version__ = "0.1.0"
