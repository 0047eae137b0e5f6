"""Synthetic COCO-format person-keypoint datasets, and a fast 3D-only (2D, 3D, camera) sampler.

``generate(out_dir, split, num_images, seed, config, num_workers)`` writes
``out_dir/images/<split>/*.jpg``, ``out_dir/annotations/person_keypoints_<split>.json`` and,
last, the record of the settings it was made with (:class:`SplitRecord`,
``person_keypoints_<split>.settings.json``); ``generate_3d`` / ``sample_poses`` skip rendering.
Conventions and the noise model are documented in docs/synth.md.

The code lives in one module per stage, and this module gathers their public names:

- ``settings``: :class:`SynthConfig` (a ``posereg.config`` schema), the presets, the settings
  record and the argument checks;
- ``placement``: the people and camera of each image (vectorised per chunk);
- ``write``: rendering one image, its annotations, and :func:`generate`;
- ``pose3d``: the 3D-only sampler (:func:`sample_poses`, :func:`generate_3d`).

Determinism: images are made in fixed chunks of ``CHUNK_SIZE``; chunk c draws from
``np.random.default_rng([seed, split_key, c])`` and image i's rendering from
``default_rng([seed, split_key, i, 1])``, so the bytes depend on (seed, split, settings) only,
not on the number of workers, and a run of N images is a prefix of a run of M > N images.
"""

from __future__ import annotations

# The names this module held before it was split (other code imports some of them from here).
from posereg.synth.placement import NEAR_MM as NEAR_MM
from posereg.synth.placement import _place_in_capture_area as _place_in_capture_area
from posereg.synth.placement import _sample_chunk as _sample_chunk
from posereg.synth.pose3d import AREA_PER_KEYPOINT_BOX as AREA_PER_KEYPOINT_BOX
from posereg.synth.pose3d import PoseSamples, generate_3d, sample_poses
from posereg.synth.settings import (
    CAMERA_SOURCES,
    CHUNK_SIZE,
    GENERATOR_VERSION,
    PRESETS,
    SplitRecord,
    SynthConfig,
    read_split_record,
    split_record_path,
    synth_config,
)
from posereg.synth.settings import IMAGE_FORMATS as IMAGE_FORMATS
from posereg.synth.write import RenderedScene, generate, render_index, render_scene
from posereg.synth.write import _bank as _bank

__all__ = [
    "SynthConfig",
    "SplitRecord",
    "GENERATOR_VERSION",
    "read_split_record",
    "split_record_path",
    "PRESETS",
    "CAMERA_SOURCES",
    "CHUNK_SIZE",
    "synth_config",
    "generate",
    "render_scene",
    "render_index",
    "RenderedScene",
    "PoseSamples",
    "sample_poses",
    "generate_3d",
]
