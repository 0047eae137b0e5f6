"""`posereg serve` as a real process on a loopback port: answers equal Predictor's, every bad
input gets its status and message and the next good request still succeeds, concurrent
requests, the timeout, and the demo page in headless Chromium."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from _real_data import real, tiny_checkpoint
from posereg.predict import Predictor
from posereg.viz import confidence_color
from test_image_size import _huge_png

POSEREG = str(Path(sys.executable).parent / "posereg")
REPO = Path(__file__).resolve().parents[1]
PHOTO = real("coco", "000000000785.jpg")  # 640 x 425
MAX_UPLOAD_MB = 1
MAX_BOXES = 4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real posereg checkpoint of a tiny random RLE model, with evaluation metrics."""
    return tiny_checkpoint(
        tmp_path_factory.mktemp("ck") / "tiny.pt", {"AP": 0.0123, "sigma_calibration": 1.5}
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Server:
    process: subprocess.Popen
    port: int

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
        timeout: float = 60,
    ) -> tuple[int, dict, bytes]:  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            conn.close()

    def json(self, method: str, path: str, **kw) -> tuple[int, dict]:
        status, _, body = self.request(method, path, **kw)
        return status, json.loads(body)


def _start(checkpoint: Path, *options: str) -> Server:
    port = _free_port()
    process = subprocess.Popen(
        [POSEREG, "serve", "--checkpoint", str(checkpoint), "--port", str(port), "--device",
         "cpu", "--log-level", "warning", *options],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    return Server(process, port)


def _wait_ready(server: Server, deadline_s: float = 120) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if server.process.poll() is not None:
            pytest.fail(f"posereg serve exited: {server.process.stdout.read()}")
        try:
            if server.request("GET", "/health", timeout=2)[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail("posereg serve did not answer /health in time")


def _stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="module")
def servers(checkpoint):
    """The server under test, and one with a 1 s timeout (started together)."""
    main = _start(checkpoint, "--max-upload-mb", str(MAX_UPLOAD_MB), "--max-boxes", str(MAX_BOXES))
    slow = _start(checkpoint, "--timeout", "1", "--max-boxes", "5000")
    try:
        _wait_ready(main)
        _wait_ready(slow)
        yield {"main": main, "timeout": slow}
    finally:
        _stop(main)
        _stop(slow)
    assert main.process.returncode in (0, -15), main.process.stdout.read()


@pytest.fixture(scope="module")
def server(servers) -> Server:
    return servers["main"]


def _multipart(fields: dict[str, bytes | str], file_fields: tuple[str, ...] = ("image",)):
    """(body, headers) of a multipart/form-data request; ``file_fields`` are sent as files."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        data = value.encode() if isinstance(value, str) else value
        disposition = f'form-data; name="{name}"'
        if name in file_fields:
            disposition += f'; filename="{name}.jpg"\r\nContent-Type: image/jpeg'
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data)
    body = b"\r\n".join(parts) + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _post_image(server: Server, image: bytes, boxes: list | str | None = None):
    fields: dict[str, bytes | str] = {"image": image}
    if boxes is not None:
        fields["boxes"] = boxes if isinstance(boxes, str) else json.dumps(boxes)
    body, headers = _multipart(fields)
    return server.json("POST", "/v1/predict", body=body, headers=headers)


def _post_json(server: Server, payload) -> tuple[int, dict]:
    return server.json("POST", "/v1/predict", body=json.dumps(payload).encode(),
                       headers={"Content-Type": "application/json"})  # fmt: skip


@pytest.fixture(scope="module")
def predictor(checkpoint) -> Predictor:
    torch.set_num_threads(1)
    return Predictor.from_checkpoint(checkpoint, device="cpu")


BOXES = [[30.5, 20.0, 200.0, 380.25], [300.0, 50.0, 150.0, 300.0]]


def _assert_equals_predictor(answer: dict, predictor: Predictor, boxes=None) -> None:
    """The JSON holds exactly Predictor's numbers on the same image file."""
    expected = predictor(PHOTO, boxes)
    assert answer["model"] == "tiny" and answer["skeleton"] == "coco17"
    assert (answer["image_width"], answer["image_height"]) == (640, 425)
    assert answer["sigma_calibration"] == 1.5
    assert len(answer["people"]) == len(expected.keypoints)
    for i, person in enumerate(answer["people"]):
        assert person["box"] == expected.boxes[i].tolist()
        assert person["score"] == expected.scores[i]
        names = [k["name"] for k in person["keypoints"]]
        assert names == list(predictor.skeleton.keypoint_names)
        xy = [[k["x"], k["y"]] for k in person["keypoints"]]
        assert xy == expected.keypoints[i].tolist()  # identical, not close
        assert [k["confidence"] for k in person["keypoints"]] == expected.confidence[i].tolist()
        assert [k["sigma"] for k in person["keypoints"]] == expected.sigma[i].tolist()
        # the calibrated 90% region of the RLE flow, r_p x sigma (pixels)
        assert [k["region"] for k in person["keypoints"]] == expected.region[i].tolist()
        r = predictor.region.radius(0.9)
        assert np.allclose(expected.region[i], r * expected.sigma[i])
    assert answer["region_p"] == 0.9
    assert set(answer["timings"]) == {"decode_ms", "queue_ms", "predict_ms", "total_ms"}


# --------------------------------------------------------------------------- good requests
def test_multipart_and_json_answers_equal_predictor(server, predictor):
    status, answer = _post_image(server, PHOTO.read_bytes())
    assert status == 200, answer
    _assert_equals_predictor(answer, predictor)
    status, answer = _post_image(server, PHOTO.read_bytes(), BOXES)
    assert status == 200, answer
    _assert_equals_predictor(answer, predictor, BOXES)
    payload = {"image": base64.b64encode(PHOTO.read_bytes()).decode(), "boxes": BOXES}
    status, answer = server.json("POST", "/v1/predict", body=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    assert status == 200, answer
    _assert_equals_predictor(answer, predictor, BOXES)
    # a data: URL (what a browser's FileReader gives) works too
    payload["image"] = "data:image/jpeg;base64," + payload["image"]
    status, answer = server.json("POST", "/v1/predict", body=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    assert status == 200
    _assert_equals_predictor(answer, predictor, BOXES)


def test_model_health_and_openapi(server):
    status, info = server.json("GET", "/v1/model")
    assert status == 200
    assert (
        info["name"] == "tiny" and info["backbone"] == "resnet18" and info["head"] == "regression"
    )
    assert info["skeleton"] == "coco17" and info["keypoint_names"][9] == "left_wrist"
    assert info["input_size"] == [64, 48] and info["flip_test"] is True
    assert info["metrics"] == {"AP": 0.0123, "sigma_calibration": 1.5}
    # a checkpoint without per-keypoint scales: c = 1, and the answer says so
    assert info["sigma_calibration_fitted"] is False
    assert info["keypoint_sigma_scale"] == [[1.0, 1.0]] * 17
    assert info["limits"] == {
        "max_upload_mb": 1.0, "max_boxes": MAX_BOXES, "timeout_s": 30.0, "max_pixels": 64_000_000
    }  # fmt: skip
    assert [15, 13] in info["limbs"]
    status, health = server.json("GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["model"] == "tiny"
    status, spec = server.json("GET", "/openapi.json")
    post = spec["paths"]["/v1/predict"]["post"]
    assert set(post["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert {"200", "400", "413", "415", "422", "503"} <= set(post["responses"])
    person = spec["components"]["schemas"]["Keypoint"]["properties"]
    assert {"name", "x", "y", "confidence", "sigma", "sigma_calibrated", "region"} == set(person)
    assert "region_p" in spec["components"]["schemas"]["PredictResponse"]["properties"]
    status, _, page = server.request("GET", "/")
    assert status == 200 and b"<canvas" in page and b"/v1/predict" in page


def test_concurrent_requests_each_get_their_own_answer(server, predictor):
    boxes = [[[10.0 + 7 * i, 15.0, 150.0 + i, 300.0]] for i in range(8)]
    expected = [predictor(PHOTO, b).keypoints[0].tolist() for b in boxes]

    def client(i: int) -> list:
        got = []
        for _ in range(3):
            status, answer = _post_image(server, PHOTO.read_bytes(), boxes[i])
            assert status == 200, answer
            got.append([[k["x"], k["y"]] for k in answer["people"][0]["keypoints"]])
        return got

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(client, range(8)))
    for i, answers in enumerate(results):
        assert all(a == expected[i] for a in answers)


@pytest.mark.slow
def test_the_server_does_not_import_the_training_loop(checkpoint):
    code = (
        "import sys; from posereg.predict import Predictor; from posereg.serve.app import "
        f"create_app; create_app(Predictor.from_checkpoint({str(checkpoint)!r}, device='cpu')); "
        "print(sorted(m for m in sys.modules if m.startswith('posereg.engine')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"  # nothing of posereg.engine, not only its training loop


# --------------------------------------------------------------------------- bad input
def _chunked_oversize(server: Server):
    """A body over the limit sent without Content-Length (chunked): counted as it arrives."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        body, headers = _multipart({"image": b"\xff" * (MAX_UPLOAD_MB * 2**20 + 1000)})
        chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
        try:
            conn.request("POST", "/v1/predict", body=chunks, headers=headers, encode_chunked=True)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body went out
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


BAD_REQUESTS = {
    "empty image": (lambda s: _post_image(s, b""), 400, "image is empty (0 bytes)"),
    "not an image": (
        lambda s: _post_image(s, b"this is a README, not a photo" * 10),
        400,
        "image cannot be decoded: cannot decode image (corrupt or unsupported format)",
    ),
    "truncated JPEG": (
        lambda s: _post_image(s, PHOTO.read_bytes()[:300]),
        400,
        "image cannot be decoded",
    ),
    "no image field": (
        lambda s: s.json("POST", "/v1/predict", **dict(zip(("body", "headers"), _multipart({"photo": b"x"}), strict=True))),
        400,
        "the multipart field 'image' (a file) is missing",
    ),
    "bad base64": (
        lambda s: s.json("POST", "/v1/predict", body=b'{"image": "not base64!"}',
                         headers={"Content-Type": "application/json"}),
        400,
        "image is not valid base64",
    ),
    "JSON without image": (
        lambda s: _post_json(s, {"boxes": [[0, 0, 50, 50]]}),
        400,
        "the JSON field 'image' is missing (base64 of the image file, or a data: URL)",
    ),
    "JSON image not a string": (
        lambda s: _post_json(s, {"image": [1, 2, 3]}),
        400,
        "the JSON field 'image' must be a string (base64 of the image file, or a data: URL); "
        "got an array",
    ),
    "JSON image null": (
        lambda s: _post_json(s, {"image": None}),
        400,
        "the JSON field 'image' must be a string (base64 of the image file, or a data: URL); "
        "got null",
    ),
    "JSON not an object": (
        lambda s: _post_json(s, ["image"]),
        400,
        'expected a JSON object {"image": "<base64>", "boxes": [[x, y, w, h]]}; got an array',
    ),
    "bad JSON": (
        lambda s: s.json("POST", "/v1/predict", body=b'{"image": ',
                         headers={"Content-Type": "application/json"}),
        400,
        "the body is not valid JSON",
    ),
    "wrong content type": (
        lambda s: s.json("POST", "/v1/predict", body=PHOTO.read_bytes(),
                         headers={"Content-Type": "image/jpeg"}),
        415,
        "Content-Type must be multipart/form-data (the file in the field 'image') or "
        "application/json (base64 in 'image'); got 'image/jpeg'",
    ),
    "upload over the limit": (
        lambda s: _post_image(s, os.urandom(MAX_UPLOAD_MB * 2**20 + 1000)),
        413,
        "the request body is over the upload limit of 1 MiB (posereg serve --max-upload-mb)",
    ),
    "chunked upload over the limit": (
        _chunked_oversize,
        413,
        "the request body is over the upload limit of 1 MiB",
    ),
    "image over the pixel limit": (
        lambda s: _post_image(s, _huge_png(20000, 20000)),
        413,
        "image of 20000x20000 px (400.0 MP) is over the limit of 64 MP (posereg serve --max-pixels)",
    ),
    "too many boxes": (
        lambda s: _post_image(s, PHOTO.read_bytes(), [[0, 0, 50, 50]] * (MAX_BOXES + 1)),
        422,
        f"too many boxes: {MAX_BOXES + 1} (the limit is {MAX_BOXES}, posereg serve --max-boxes)",
    ),
    "box of 3 numbers": (
        lambda s: _post_image(s, PHOTO.read_bytes(), [[0, 0, 50, 50], [1, 2, 3]]),
        422,
        "box #1: expected [x, y, w, h], 4 finite numbers; got [1, 2, 3]",
    ),
    "boxes not JSON": (
        lambda s: _post_image(s, PHOTO.read_bytes(), "[[1, 2, 3, 4]"),
        422,
        "boxes is not valid JSON",
    ),
    "boxes not a list": (
        lambda s: _post_image(s, PHOTO.read_bytes(), '{"x": 1}'),
        422,
        "boxes must be a JSON list of [x, y, w, h] boxes",
    ),
    "box outside the image": (
        lambda s: _post_image(s, PHOTO.read_bytes(), [[700, 10, 50, 50]]),
        422,
        "box #0: box [700.0, 10.0, 50.0, 50.0] lies outside the image (640x425)",
    ),
    "box without area": (
        lambda s: _post_image(s, PHOTO.read_bytes(), [[10, 10, 0, 50]]),
        422,
        "box #0: box has no area: w=0, h=50",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_its_status_and_message_and_the_server_goes_on(server, predictor, case):
    send, status, message = BAD_REQUESTS[case]
    before = server.json("GET", "/health")[1]
    got_status, answer = send(server)
    assert got_status == status, answer
    assert message in answer["detail"]
    # the model is still up: the next good request gets Predictor's answer
    good_status, good = _post_image(server, PHOTO.read_bytes(), BOXES[:1])
    assert good_status == 200, good
    _assert_equals_predictor(good, predictor, BOXES[:1])
    after = server.json("GET", "/health")[1]
    assert after["failed"] == before["failed"] + 1
    assert after["requests"] == before["requests"] + 2


def _log_lines(server: Server, until: str, wait_s: float = 20) -> list[str]:
    """The server's output lines that arrive until one contains ``until`` (or ``wait_s``)."""
    fd = server.process.stdout.fileno()
    os.set_blocking(fd, False)
    text = ""
    try:
        end = time.monotonic() + wait_s
        while until not in text and time.monotonic() < end:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                text += os.read(fd, 65536).decode(errors="replace")
        time.sleep(0.5)  # anything logged right after (a traceback would follow its first line)
        while select.select([fd], [], [], 0)[0] and (chunk := os.read(fd, 65536)):
            text += chunk.decode(errors="replace")
    finally:
        os.set_blocking(fd, True)
    return text.splitlines()


def test_an_aborted_upload_is_one_warning_line_and_the_server_goes_on(server, predictor):
    _log_lines(server, "", 0)  # what it logged before (its banner)
    body, headers = _multipart({"image": PHOTO.read_bytes()})
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
        client.sendall(
            f"POST /v1/predict HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {len(body)}\r\n\r\n"
            .encode() + body[: len(body) // 2]
        )  # fmt: skip
        time.sleep(0.3)  # the server has started reading the body
    lines = _log_lines(server, "disconnected")
    assert len(lines) == 1, lines  # no "Exception in ASGI application" and its traceback
    assert lines[0].startswith("WARNING:")
    assert lines[0].endswith(
        "disconnected before its request to /v1/predict was read in full; nothing answered"
    )
    status, answer = _post_image(server, PHOTO.read_bytes(), BOXES[:1])
    assert status == 200, answer
    _assert_equals_predictor(answer, predictor, BOXES[:1])


def _serve_error(*options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [POSEREG, "serve", "--checkpoint", "no/such/checkpoint.pt", *options],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


BAD_OPTIONS = {
    "port out of range": (
        ("--port", "99999"),
        "--port 99999 is out of range: a TCP port is 0-65535 (0: any free port)",
    ),
    "host not of this machine": (
        ("--host", "192.0.2.1", "--port", "8000"),  # TEST-NET-1, never a local address
        "cannot listen on 192.0.2.1:8000: 192.0.2.1 is not an address of this machine "
        "(--host 127.0.0.1: this machine only; 0.0.0.0: every interface)",
    ),
    "pixel limit not a number": (
        ("--max-pixels", "nan"),
        "--max-pixels must be a number of pixels >= 1, got nan",
    ),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_a_bad_serve_option_is_one_line_before_anything_loads(case):
    options, message = BAD_OPTIONS[case]
    out = _serve_error(*options)  # the checkpoint does not exist: it is not even looked at
    assert out.returncode == 2, out
    assert out.stderr == f"posereg serve: error: {message}\n"
    assert out.stdout == ""


def test_a_port_in_use_is_one_line_before_anything_loads():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # the checkpoint does not exist: the port is taken before the model is loaded
        out = _serve_error("--port", str(port))
    assert out.returncode == 2, out
    assert out.stderr == (
        f"posereg serve: error: cannot listen on 127.0.0.1:{port}: the port is already in use "
        "(another server is running there; stop it or choose another --port)\n"
    )
    assert out.stdout == ""  # no "posereg serve: ... on http://..." banner


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (Linux's VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_a_huge_image_is_refused_from_its_header_without_decoding(server):
    image = _huge_png(20000, 20000)  # a small upload (about 60 KB) of 400 MP: 1.2 GB decoded
    before = _peak_rss_mb(server.process.pid)
    status, answer = _post_image(server, image)
    assert status == 413, answer
    assert answer["detail"] == (
        "image of 20000x20000 px (400.0 MP) is over the limit of 64 MP (posereg serve --max-pixels)"
    )
    assert _peak_rss_mb(server.process.pid) - before < 100  # nothing was decoded


@pytest.mark.slow
def test_a_request_over_the_timeout_gets_503_and_the_server_goes_on(servers, predictor):
    """A request that itself takes longer than --timeout is told so; one queued behind it is
    told the model is busy (with Retry-After); then the server answers as before."""
    server = servers["timeout"]
    long = _multipart(
        {"image": PHOTO.read_bytes(), "boxes": json.dumps([[10, 10, 200, 300]] * 2000)}
    )
    with ThreadPoolExecutor(1) as pool:
        start = time.monotonic()
        slow = pool.submit(server.request, "POST", "/v1/predict", *long)
        while not server.json("GET", "/health")[1]["busy"] and time.monotonic() - start < 30:
            time.sleep(0.05)
        # a small request behind the long forward pass: it waits for the model, and times out
        queued = time.monotonic()
        status, headers, body = server.request(
            "POST", "/v1/predict", *_multipart({"image": PHOTO.read_bytes()})
        )
        assert status == 503, body
        assert time.monotonic() - queued < 10  # it did not wait for the model
        assert json.loads(body)["detail"] == (
            "not answered within 1 s (posereg serve --timeout); the model is busy, retry later"
        )
        assert headers["retry-after"] == "1"
        status, headers, body = slow.result()
    assert status == 503, body
    assert time.monotonic() - start < 10  # it did not wait for its own forward pass either
    assert json.loads(body)["detail"] == (
        "the request exceeded the timeout (1 s, posereg serve --timeout) while predicting; "
        "a smaller image or fewer boxes take less time"
    )
    assert "retry-after" not in headers  # the same request would time out again
    # the forward pass that had started finishes (a thread cannot be stopped); then, as before:
    deadline = time.monotonic() + 120
    while server.json("GET", "/health")[1]["busy"] and time.monotonic() < deadline:
        time.sleep(0.2)
    status, answer = _post_image(server, PHOTO.read_bytes(), BOXES)
    assert status == 200, answer
    _assert_equals_predictor(answer, predictor, BOXES)


# --------------------------------------------------------------------------- the demo page
def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def _chrome_driver(tmp_path: Path):
    """Headless Chromium driven by selenium, its viewport 1280 x 800 px."""
    pytest.importorskip("selenium", reason="selenium is in the dev extra")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = _chromium()  # type: ignore[misc]
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", "--window-size=1300,900",
                 "--hide-scrollbars", "--use-fake-device-for-media-stream",
                 "--use-fake-ui-for-media-stream",
                 f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    _set_viewport(driver, 1280, 800)
    return driver


def _set_viewport(driver, width: int, height: int) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    assert driver.execute_script("return [innerWidth, innerHeight]") == [width, height]


# Every piece of the legend's text: its box (client rects of the text), and whether the point at
# the middle of each box shows the legend itself (not the JSON panel or the canvas on top).
_LEGEND_BOXES = """
const legend = document.querySelector('.legend');
const walker = document.createTreeWalker(legend, NodeFilter.SHOW_TEXT);
const out = [];
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  if (!node.textContent.trim()) continue;
  const range = document.createRange();
  range.selectNodeContents(node);
  for (const r of range.getClientRects()) {
    const hit = document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2);
    out.push({text: node.textContent.trim(), left: r.left, right: r.right, top: r.top,
              bottom: r.bottom, shown: hit !== null && legend.contains(hit)});
  }
}
const box = (id) => document.getElementById(id).getBoundingClientRect().toJSON();
return {pieces: out, result: box('result'), canvas: box('canvas')};
"""


def _assert_legend_visible(driver, width: int) -> None:
    """The legend reads on one line, inside the window, with nothing over it."""
    got = driver.execute_script(_LEGEND_BOXES)
    pieces = got["pieces"]
    text = " ".join(p["text"] for p in pieces)
    assert "confidence" in text and "rings: the 90% predictive region" in text, text
    tops = {round(p["top"]) for p in pieces}
    assert max(tops) - min(tops) <= 4, (width, pieces)  # one line, not wrapped into a column
    for p in pieces:
        assert p["shown"], (width, p)
        assert 0 <= p["left"] and p["right"] <= width, (width, p)
        for panel in (got["result"], got["canvas"]):
            overlap = (
                p["left"] < panel["right"] and panel["left"] < p["right"]
                and p["top"] < panel["bottom"] and panel["top"] < p["bottom"]
            )  # fmt: skip
            assert not overlap, (width, p, panel)


@pytest.mark.slow
@pytest.mark.skipif(
    _chromium() is None,
    reason="headless Chromium is not installed (Debian: apt-get install chromium chromium-driver; "
    ".ci/run installs them)",
)
def test_demo_page_in_headless_chromium(server, predictor, tmp_path):
    pytest.importorskip("selenium", reason="selenium is in the dev extra")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _chrome_driver(tmp_path)
    try:
        driver.get(f"http://127.0.0.1:{server.port}/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.execute_script("return window.posereg.model !== null"))
        assert "model tiny: resnet18, regression head" in driver.find_element(By.ID, "model").text
        driver.find_element(By.ID, "file").send_keys(str(PHOTO))
        wait.until(
            lambda d: (
                d.find_element(By.ID, "status").get_attribute("data-state") in ("done", "error")
            )
        )
        status = driver.find_element(By.ID, "status")
        assert status.get_attribute("data-state") == "done", status.text
        assert status.text.startswith("1 person")
        # the JSON the page got and shows: Predictor's numbers
        result = driver.execute_script("return window.posereg.lastResult")
        _assert_equals_predictor(result, predictor)
        assert json.loads(driver.find_element(By.ID, "result").text) == result
        # the canvas: the photo at full size, and the keypoints drawn at the predicted pixels
        size = driver.execute_script(
            "const c = document.getElementById('canvas'); return [c.width, c.height]"
        )
        assert size == [640, 425]
        pixels = driver.execute_script(
            "const c = document.getElementById('canvas').getContext('2d');"
            "return arguments[0].map(([x, y]) => Array.from(c.getImageData(x, y, 1, 1).data));",
            [[round(k["x"]), round(k["y"])] for k in result["people"][0]["keypoints"]],
        )
        keypoints = result["people"][0]["keypoints"]
        colours = [confidence_color(k["confidence"])[::-1] for k in keypoints]  # BGR -> RGB
        radius = 2 + 1  # the page's dot: thickness (max side / 300, rounded) + 1
        for k, pixel in zip(keypoints, pixels, strict=True):
            near = [c for j, c in zip(keypoints, colours, strict=True)
                    if np.hypot(j["x"] - round(k["x"]), j["y"] - round(k["y"])) < radius - 0.5]  # fmt: skip
            assert any(np.abs(np.array(pixel[:3]) - c).max() <= 2 for c in near), (k, pixel)
        assert driver.execute_script("return window.posereg.drawnFrames") == 1
        # the legend is visible, on one line and not under the JSON panel, on common screens
        for width in (1280, 1200, 1366, 1440, 1600):
            _set_viewport(driver, width, 800)
            _assert_legend_visible(driver, width)
        _set_viewport(driver, 1280, 800)
        shot = tmp_path / "serve_demo.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        # the webcam (Chromium's fake camera): frames go to the server and are drawn, one by one
        driver.find_element(By.ID, "webcam").click()
        wait.until(lambda d: d.execute_script("return window.posereg.drawnFrames") >= 3)
        driver.find_element(By.ID, "stop").click()
        assert driver.find_element(By.ID, "status").text == "stopped"
        frame = driver.execute_script("return window.posereg.lastResult")
        assert (frame["image_width"], frame["image_height"]) == (640, 480)
        assert len(frame["people"]) == 1 and len(frame["people"][0]["keypoints"]) == 17
    finally:
        driver.quit()


def test_a_head_without_sigma_answers_null_sigma(predictor):
    from posereg.predict import PoseResult
    from posereg.serve.app import _response
    from posereg.serve.schema import PredictResponse, Timings

    k = predictor.skeleton.num_keypoints
    result = PoseResult(
        np.full((1, k, 2), 5.0), None, np.full((1, k), 0.25), np.array([[0.0, 0, 9, 9]]), np.ones(1)
    )
    answer = _response(predictor, result, np.zeros((10, 12, 3), np.uint8), Timings(
        decode_ms=0, queue_ms=0, predict_ms=0, total_ms=0))  # fmt: skip
    data = json.loads(answer.model_dump_json())
    assert [kp["sigma"] for kp in data["people"][0]["keypoints"]] == [None] * k
    assert [kp["region"] for kp in data["people"][0]["keypoints"]] == [None] * k
    assert data["region_p"] is None
    assert (data["image_width"], data["image_height"]) == (12, 10)
    PredictResponse.model_validate(data)  # what the schema publishes


SCREENSHOT_CHECKPOINT = os.environ.get("POSEREG_SCREENSHOT_CHECKPOINT", "")


def _synthetic_person(folder: Path, scale: int = 4) -> tuple[Path, np.ndarray]:
    """The first one-person image of the main job's synthetic validation split (easy preset,
    128 x 128 px, seed 0: images the model was evaluated on, not trained on), cropped to its
    person's box as the model sees it (x 1.25, aspect 3:4) and enlarged ``scale`` times to be
    seen on the page. Returns the PNG and its labelled keypoints (17, 3) in its pixels."""
    import cv2

    from posereg.synth import generate, synth_config

    ann = generate(folder, "val", 12, seed=0, config=synth_config("easy", image_size=(128, 128)),
                   num_workers=0, progress=False)  # fmt: skip
    coco = json.loads(ann.read_text())
    people: dict[int, list] = {}
    for a in coco["annotations"]:
        people.setdefault(a["image_id"], []).append(a)
    image_id, (person,) = next((i, p) for i, p in people.items() if len(p) == 1)
    image = cv2.imread(str(folder / "images" / "val" / f"{image_id:012d}.jpg"))
    x, y, w, h = person["bbox"]
    h_crop = max(h, w * 4 / 3) * 1.25
    x0 = max(0, round(x + w / 2 - h_crop * 3 / 8))
    y0 = max(0, round(y + h / 2 - h_crop / 2))
    crop = image[y0 : round(y0 + h_crop), x0 : round(x0 + h_crop * 3 / 4)]
    crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    path = folder / "synthetic_person.png"
    cv2.imwrite(str(path), crop)
    keypoints = np.array(person["keypoints"], float).reshape(-1, 3)
    keypoints[:, :2] = (keypoints[:, :2] - [x0, y0] + 0.5) * scale - 0.5  # pixel centres
    return path, keypoints


@pytest.mark.slow
@pytest.mark.skipif(
    not (os.environ.get("POSEREG_UPDATE_SCREENSHOTS") and SCREENSHOT_CHECKPOINT),
    reason="regenerates docs/images/serve_demo.png: set POSEREG_UPDATE_SCREENSHOTS=1 and "
    "POSEREG_SCREENSHOT_CHECKPOINT to the main job's checkpoint (docs/serve.md)",
)
@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed")
def test_docs_screenshot_of_a_trained_model(tmp_path):
    """docs/images/serve_demo.png: the demo page with a trained model (configs/synth_rle.yaml) on
    a synthetic image, where it works, and beside it a real photo, out of its domain."""
    pytest.importorskip("selenium", reason="selenium is in the dev extra")
    from PIL import Image, ImageDraw, ImageFont
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    synthetic, truth = _synthetic_person(tmp_path / "synth")
    server = _start(Path(SCREENSHOT_CHECKPOINT))
    driver = None
    try:
        _wait_ready(server)
        driver = _chrome_driver(tmp_path)
        driver.get(f"http://127.0.0.1:{server.port}/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.execute_script("return window.posereg.model !== null"))

        def upload(path: Path) -> dict:
            before = driver.execute_script("return window.posereg.drawnFrames")
            driver.find_element(By.ID, "file").send_keys(str(path))
            wait.until(lambda d: d.execute_script("return window.posereg.drawnFrames") > before)
            assert driver.find_element(By.ID, "status").get_attribute("data-state") == "done"
            return driver.execute_script("return window.posereg.lastResult")

        # the real photo first: its canvas goes beside the page
        upload(PHOTO)
        real_png = tmp_path / "real.png"
        real_png.write_bytes(driver.find_element(By.ID, "canvas").screenshot_as_png)
        result = upload(synthetic)
        # where it works: the trained model finds the synthetic person's labelled keypoints
        pred = np.array([[k["x"], k["y"]] for k in result["people"][0]["keypoints"]])
        seen = truth[:, 2] > 0
        height = np.ptp(truth[seen, 1])
        error = np.linalg.norm(pred[seen] - truth[seen, :2], axis=1) / height
        assert np.median(error) < 0.15, f"median error {np.median(error):.2f} of the person height"
        _assert_legend_visible(driver, 1280)
        page_png = tmp_path / "page.png"
        driver.save_screenshot(str(page_png))
    finally:
        if driver is not None:
            driver.quit()
        _stop(server)

    page, real_canvas = Image.open(page_png).convert("RGB"), Image.open(real_png).convert("RGB")
    margin, width = 24, real_canvas.width + 48
    sheet = Image.new("RGB", (page.width + width, page.height), (250, 250, 250))
    sheet.paste(page, (0, 0))
    draw = ImageDraw.Draw(sheet)
    draw.line([(page.width, 0), (page.width, page.height)], fill=(180, 180, 180), width=2)
    font = ImageFont.load_default(size=20)
    small = ImageFont.load_default(size=16)
    x = page.width + margin
    draw.text((x, 24), "Out of its domain: a real photo", font=font, fill=(150, 0, 0))
    draw.text(
        (x, 56),
        "The same model on a COCO photo. It saw only synthetic\n"
        "people in training (configs/synth_rle.yaml): this pose is\n"
        "not expected to be right, and its wide orange and red\n"
        "rings say the model is unsure.\n"
        "Left: a synthetic validation image, where it works.",
        font=small, fill=(60, 60, 60), spacing=6,
    )  # fmt: skip
    sheet.paste(real_canvas, (x, 190))
    out = tmp_path / "serve_demo.png"
    sheet.save(out, optimize=True)
    shutil.copy(out, REPO / "docs" / "images" / "serve_demo.png")
