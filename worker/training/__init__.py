"""Training runs on a patch table: the files around :mod:`models.training` (data, checkpoints, logs)."""
