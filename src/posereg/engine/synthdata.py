"""Generate-and-cache of the synthetic dataset a config asks for (``data.synth``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from posereg.config import Config, to_dict

__all__ = ["ensure_synthetic_dataset"]

logger = logging.getLogger("posereg.data")


def ensure_synthetic_dataset(cfg: Config) -> Path:
    """Generate ``cfg.data.synth`` unless the same settings were generated before; returns its root.

    The settings are recorded in ``root/synth_settings.json`` after both splits are written, so
    an interrupted generation is redone rather than half-used.
    """
    from posereg.synth.generate import SynthConfig, generate

    s = cfg.data.synth
    assert s is not None
    root = Path(s.root)
    settings = to_dict(s)
    settings.pop("workers")
    stamp = root / "synth_settings.json"
    if stamp.exists() and json.loads(stamp.read_text()) == settings:
        logger.info("synthetic dataset %s is up to date", root)
        return root
    synth_cfg = SynthConfig.preset(s.preset, **s.options)
    stamp.unlink(missing_ok=True)
    for split, n in (("train", s.num_train), ("val", s.num_val)):
        logger.info("generating %d synthetic %s images in %s", n, split, root)
        generate(root, split, n, seed=s.seed, config=synth_cfg, num_workers=s.workers)
    stamp.write_text(json.dumps(settings, indent=2, sort_keys=True))
    return root
