"""Synthetic people with COCO keypoint labels, a measured label-noise model and the clean truth.

Rendered 3D articulated bodies (``body``), seen by perspective cameras (``camera``), drawn far
to near with a part-id buffer (``render``, ``scene``), labelled with annotator-style noise
(``noise``) and written as COCO person_keypoints splits (``generate``); ``show`` draws contact
sheets. See docs/synth.md.

Example:
    >>> from posereg.synth import SynthConfig, generate
    >>> generate("data/synth", "val", 100, seed=1, config=SynthConfig.preset("easy"))  # doctest: +SKIP
"""

from posereg.synth.generate import (
    PRESETS,
    PoseSamples,
    RenderedScene,
    SynthConfig,
    generate,
    generate_3d,
    render_index,
    sample_poses,
    synth_config,
)
from posereg.synth.noise import NoiseConfig
from posereg.synth.show import contact_sheet

__all__ = [
    "PRESETS",
    "NoiseConfig",
    "PoseSamples",
    "RenderedScene",
    "SynthConfig",
    "contact_sheet",
    "generate",
    "generate_3d",
    "render_index",
    "sample_poses",
    "synth_config",
]
