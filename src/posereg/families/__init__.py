"""The model families (:mod:`posereg.family`): one module each."""
