"""The ranking layer: retrieval modes, fusion of ranked lists, calibration of scores into probabilities."""
