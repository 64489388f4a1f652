"""Weak labels, augmentation and the training loop of the patch classifier. Imports no torch here."""

PAPER_EPOCHS = 500
"""The paper's schedule ("Model training"): 500 epochs."""
