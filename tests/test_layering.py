"""The layering STYLE.md asks for, checked in fresh interpreters: config imports nothing of data
(nor torch); the inference modules (predict, export, serve, video, lift, convert, runtime) and a
user error in an inference command import nothing of posereg.engine; the error classes and the
pose result are leaves."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from posereg.samples import SAMPLES_DIR

PHOTO = SAMPLES_DIR / "coco" / "000000000785.jpg"


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_config_imports_nothing_of_data_nor_torch():
    got = _run(
        "import sys, posereg.config; "
        "print(sorted(m for m in sys.modules if m.startswith(('posereg.', 'torch'))))"
    )
    assert got == "['posereg.config']"


#: The inference side: what ``posereg predict``/``export``/``serve``/``lift``/``convert`` run.
INFERENCE_MODULES = (
    "posereg.predict",
    "posereg.export",
    "posereg.export_multiperson",
    "posereg.serve.app",
    "posereg.video",
    "posereg.lift",
    "posereg.convert",
    "posereg.runtime",
    "posereg.decode",
    "posereg.families.topdown",  # the families (posereg.family): the engine only when training
    "posereg.families.lift",
    "posereg.families.keypoint_rcnn",
    "posereg.families.dense",
)


def test_no_inference_module_imports_anything_of_the_engine():
    """One fresh interpreter imports the inference modules one after the other and records, per
    module, the ``posereg.engine`` modules present after its import: imports only accumulate, so
    a module that pulls in the engine (itself or through anything it imports) shows at its own
    entry, and every entry empty means none of them does (one interpreter instead of one per
    module: the same property, ~40 s less)."""
    modules = [m for m in INFERENCE_MODULES if m != "posereg.serve.app"]
    try:
        import fastapi  # noqa: F401

        modules.append("posereg.serve.app")
    except ImportError:
        pass
    got = _run(
        "import importlib, json, sys\n"
        "seen = {}\n"
        f"for module in {modules!r}:\n"
        "    importlib.import_module(module)\n"
        "    seen[module] = sorted(m for m in sys.modules if m.startswith('posereg.engine'))\n"
        "print(json.dumps(seen))"
    )
    seen = json.loads(got.splitlines()[-1])
    assert list(seen) == modules
    assert {m: e for m, e in seen.items() if e} == {}


@pytest.mark.parametrize("module", ["posereg.errors", "posereg.result"])
def test_the_error_classes_and_the_pose_result_are_leaves(module):
    got = _run(
        f"import sys, {module}; "
        "print(sorted(m for m in sys.modules if m.startswith(('posereg.', 'torch'))))"
    )
    assert got == f"[{module!r}]"


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "{photo}", "--checkpoint", "{missing}", "--out", "{tmp}/predict"],
        ["export", "--checkpoint", "{missing}", "--out", "{tmp}/model.onnx"],
        ["lift", "{tmp}/poses.json", "--checkpoint", "{missing}", "--out", "{tmp}/lift"],
        ["convert", "--from", "official", "{missing}", "{tmp}/converted.pt"],
    ],
    ids=lambda argv: argv[0],
)
def test_a_user_error_in_an_inference_command_does_not_import_the_engine(tmp_path, argv):
    missing = tmp_path / "missing.pt"
    argv = [a.format(tmp=tmp_path, missing=missing, photo=PHOTO) for a in argv]
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from posereg.cli import main; "
            f"rc = main({argv!r}); "
            "print(rc, sorted(m for m in sys.modules if m.startswith('posereg.engine')))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # a default output folder would land here
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "2 []"
    assert f"posereg {argv[0]}: error:" in out.stderr and str(missing) in out.stderr
