"""Training engine: the loop, evaluation, run folders and distributed helpers (checkpoint I/O is
:mod:`posereg.checkpoint`)."""
