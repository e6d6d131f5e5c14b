"""moesweep: distributed hyperparameter and seed sweeps for MoE classifier heads."""

__version__ = "0.1.0"
