"""Training engine: the loop, evaluation, checkpoints and distributed helpers."""
