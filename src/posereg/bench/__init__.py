"""``posereg bench``: the paper's claims (issue 10) as named profiles of ordinary training runs.

:mod:`~posereg.bench.experiments` (what runs: experiments and profiles),
:mod:`~posereg.bench.cache` (run keys and folders), :mod:`~posereg.bench.runner` (scheduling,
results.json), :mod:`~posereg.bench.evaluation` (the numbers of one run). Nothing heavy is
imported here.
"""

from posereg.bench.experiments import PROFILES, Experiment, Method, Profile, get_profile

__all__ = ["PROFILES", "Experiment", "Method", "Profile", "get_profile"]
