"""`cnnlab serve` as a client meets it: a real uvicorn server in a subprocess on a free loopback port,
the guide-cnn trained on Fashion-MNIST, real test images; every limit answered with its status and
a one-line reason, never a traceback."""

from __future__ import annotations

import io
import re
import socket
import threading
import time

import httpx
import pytest
from PIL import Image

import cnnlab
from tests.helpers import run_cli
from tests.serve.server import raw_exchange, running_server


def _metrics(url: str) -> dict[str, float]:
    """/metrics as {series with labels: value}."""
    text = httpx.get(f"{url}/metrics").text
    return {name: float(value) for name, value in re.findall(r"^(\S+) (\S+)$", text, flags=re.M)
            if not name.startswith("#")}


def _one_line_reason(response: httpx.Response) -> str:
    reason = response.json()["detail"]
    assert "\n" not in reason and "Traceback" not in response.text and 'File "' not in response.text
    return reason


def test_predict_answers_as_cnnlab_predict_does(server, guide_run, test_images):
    paths = [path for path, _ in test_images[:5]]
    expected = cnnlab.predict(guide_run, paths, top_k=3)
    files = [("file", (path.name, path.read_bytes(), "image/png")) for path in paths]
    rows = httpx.post(f"{server}/predict", params={"top_k": 3}, files=files).json()
    assert [row["file"] for row in rows] == [path.name for path in paths]
    for row, reference in zip(rows, expected):
        assert row.keys() == reference.keys()  # the same shape as `cnnlab predict`'s rows
        assert [entry["label"] for entry in row["top_k"]][:1] == [entry["label"] for entry in reference["top_k"]][:1]
        assert row["confidence"] == pytest.approx(reference["confidence"], abs=0.02)
    raw = httpx.post(f"{server}/predict", content=paths[0].read_bytes(), headers={"Content-Type": "image/png"})
    assert raw.status_code == 200 and raw.json()[0]["label"] == expected[0]["label"]


def test_an_unusual_form_is_read_by_the_full_parser_and_answered_the_same(server, guide_run, test_images):
    """A part header the one-pass splitter does not take (Content-Transfer-Encoding) sends the form,
    already read, to Starlette's parser: the same row, and bad `top_k` values refused as the route
    refuses them."""
    path = test_images[0][0]
    expected = cnnlab.predict(guide_run, [path])[0]
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + path.name.encode()
            + b"\"\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            + path.read_bytes() + b"\r\n--XyZ--\r\n")
    unusual = httpx.post(f"{server}/predict", content=body, headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert unusual.status_code == 200, unusual.text
    assert [(row["file"], row["label"]) for row in unusual.json()] == [(path.name, expected["label"])]
    for bad in ("0", "", "x", "1001"):
        refused = httpx.post(f"{server}/predict", params={"top_k": bad}, content=path.read_bytes(),
                             headers={"Content-Type": "image/png"})
        assert refused.status_code == 422 and "top_k must be a whole number" in _one_line_reason(refused), bad


def test_a_body_over_the_limit_gets_413_before_it_is_read(server):
    # A declared length over the limit: refused with only a kilobyte sent.
    head = ("POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
            "Content-Length: 1000000000\r\n\r\n")
    status, body = raw_exchange(server, head, iter([b"\0" * 1024]))
    assert status == 413 and "--max-body-bytes 200,000" in body and "Traceback" not in body
    # No length declared (chunked): refused once the bytes read pass the limit, before the end.
    head = "POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"4000\r\n" + b"\0" * 0x4000 + b"\r\n"
    status, body = raw_exchange(server, head, iter([chunk] * 14))  # 229,376 bytes, no final chunk
    assert status == 413 and "Traceback" not in body


def test_what_is_not_an_image_is_refused_with_its_reason(server, tmp_path):
    text = httpx.post(f"{server}/predict", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert text.status_code == 415 and _one_line_reason(text) == "notes.txt is text/plain, not an image"
    raw = httpx.post(f"{server}/predict", content=b"hello", headers={"Content-Type": "text/plain"})
    assert raw.status_code == 415 and "text/plain is not an image" in _one_line_reason(raw)
    garbage = httpx.post(f"{server}/predict", files={"file": ("x.png", b"\x89PNG not really", "image/png")})
    assert garbage.status_code == 422 and _one_line_reason(garbage).startswith("x.png: ")
    empty = httpx.post(f"{server}/predict", content=b"", headers={"Content-Type": "image/png"})
    assert empty.status_code == 422 and "empty" in _one_line_reason(empty)


def test_a_decompression_bomb_is_refused_from_its_header(server):
    bomb = io.BytesIO()
    Image.new("L", (2000, 2000)).save(bomb, format="PNG")  # 4 million pixels in a few kB
    assert len(bomb.getvalue()) < 20_000
    response = httpx.post(f"{server}/predict", files={"file": ("bomb.png", bomb.getvalue(), "image/png")})
    reason = _one_line_reason(response)
    assert response.status_code == 422 and "4,000,000 pixels, more than the 1,000,000" in reason


def test_info_health_docs_and_the_page(server, guide_run):
    info = httpx.get(f"{server}/info").json()
    assert info["task"] == "classification" and info["model"] == "guide-cnn"
    assert info["classes"] == cnnlab.load(guide_run).class_names and len(info["classes"]) == 10
    assert info["input"] == {"channels": 1, "height": 28, "width": 28, "fit": "squash"}
    assert httpx.get(f"{server}/health").json() == {"status": "ok", "queue_depth": 0, "reading": 0}
    assert "/predict" in httpx.get(f"{server}/openapi.json").json()["paths"]
    assert httpx.get(f"{server}/docs").status_code == 200
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and 'id="file"' in page.text
    assert not re.search(r"https?://|<script src", page.text)  # nothing loaded from elsewhere


def test_explain_and_input_answer_pictures(server, confident_image):
    path, truth = confident_image
    files = {"file": (path.name, path.read_bytes(), "image/png")}
    explained = httpx.post(f"{server}/explain", files=files)
    assert explained.status_code == 200 and explained.headers["content-type"] == "image/png"
    assert explained.headers["x-cnnlab-explained"] == truth.replace("/", "%2F")  # percent-encoded
    picture = Image.open(io.BytesIO(explained.content))
    assert picture.size == (224, 224) and picture.mode == "RGB"  # 28 px × 8, coloured by the heatmap
    seen = Image.open(io.BytesIO(httpx.post(f"{server}/input", files=files).content))
    assert seen.size == (224, 224) and seen.mode == "L"
    assert seen.resize((28, 28), Image.Resampling.NEAREST).tobytes() == Image.open(path).tobytes()
    unknown = httpx.post(f"{server}/explain", params={"target": "Umbrella"}, files=files)
    assert unknown.status_code == 422 and "Umbrella" in _one_line_reason(unknown)


def test_metrics_count_requests_and_concurrent_requests_share_a_forward_pass(server, test_images):
    before = _metrics(server)
    paths = [path for path, _ in test_images[:16]]
    answers: dict[int, str] = {}
    # Each client connects first (GET /health keeps its connection open), then all 16 send at once: a
    # lone request is answered without waiting for company, so requests sent one after another as
    # their threads happen to start need not meet in a batch (and on a fast machine did not).
    together = threading.Barrier(len(paths))

    def ask(number: int) -> None:
        with httpx.Client(timeout=30) as client:
            client.get(f"{server}/health")
            together.wait()
            response = client.post(f"{server}/predict", files={"file": (paths[number].name,
                                                                         paths[number].read_bytes(), "image/png")})
        answers[number] = response.json()[0]["label"]

    threads = [threading.Thread(target=ask, args=(number,)) for number in range(len(paths))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = _metrics(server)
    key = 'cnnlab_requests_total{endpoint="/predict",status="200"}'
    assert after[key] - before.get(key, 0) == 16
    batches = after["cnnlab_batch_size_count"] - before.get("cnnlab_batch_size_count", 0)
    images = after["cnnlab_batch_size_sum"] - before.get("cnnlab_batch_size_sum", 0)
    assert images == 16 and batches < 16  # some forward passes took several requests
    assert after['cnnlab_batch_size_bucket{le="1"}'] - before.get('cnnlab_batch_size_bucket{le="1"}', 0) < batches
    assert after["cnnlab_queue_depth"] == 0
    assert 'cnnlab_request_duration_seconds_count{endpoint="/predict"}' in after


def _wait_for_health(url: str, field: str, value: int) -> None:
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/health").json()[field] != value:
        assert time.monotonic() < deadline, f"/health never showed {field} {value}"
        time.sleep(0.02)


def test_a_full_queue_gets_503_and_a_slow_answer_504(guide_run, test_images, tmp_path):
    """A batch waits (up to 3 s) for company while a request is still arriving: a client sending its
    body slowly keeps one. A request queued meanwhile fills the queue of one: the next is turned away
    at once, and the queued one's answer comes too late for its 1 s timeout."""
    image = test_images[0][0].read_bytes()
    with running_server(guide_run, "--max-queue", 1, "--max-wait-ms", 3000, "--timeout", 1,
                        log=tmp_path / "server.log") as url:
        host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()
        slow = socket.create_connection((host, int(port)), timeout=30)
        slow.sendall(f"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
                     f"Content-Length: {len(image)}\r\n\r\n".encode() + image[:100])
        _wait_for_health(url, "reading", 1)
        first: dict[str, httpx.Response] = {}
        queued = threading.Thread(target=lambda: first.setdefault("response", httpx.post(
            f"{url}/predict", content=image, headers={"Content-Type": "image/png"}, timeout=30)))
        started = time.monotonic()
        queued.start()
        _wait_for_health(url, "queue_depth", 1)
        turned_away = httpx.post(f"{url}/predict", content=image, headers={"Content-Type": "image/png"})
        queued.join()
        assert turned_away.status_code == 503 and turned_away.headers["retry-after"] == "1"
        assert "--max-queue 1" in _one_line_reason(turned_away)
        timed_out = first["response"]
        assert timed_out.status_code == 504 and "--timeout 1 s" in _one_line_reason(timed_out)
        assert 0.9 < time.monotonic() - started < 2.9  # the timeout, not the batch's 3 s wait
        slow.sendall(image[100:])  # the slow client finishes, and is answered
        answer = b""
        while b'"label":' not in answer and (chunk := slow.recv(65536)):
            answer += chunk
        slow.close()
        answer = answer.decode()
        assert answer.startswith("HTTP/1.1 200 ") and '"label":' in answer
        counts = _metrics(url)
        assert counts['cnnlab_requests_total{endpoint="/predict",status="503"}'] == 1
        assert counts['cnnlab_requests_total{endpoint="/predict",status="504"}'] == 1


def test_models_load_only_from_local_paths():
    outcome = run_cli("serve", "https://example.com/model.onnx")
    assert outcome.exit_code == 2
    assert "loads a model only from a local path" in outcome.stderr and "Traceback" not in outcome.stderr


def test_an_exported_onnx_file_is_served_with_the_runs_answers(guide_run, test_images, tmp_path):
    """`cnnlab serve model.onnx`: the file alone (cnnlab.load reads its metadata) answers as the run
    does; Grad-CAM, which needs the PyTorch network, is refused with a reason instead of a crash."""
    exported = tmp_path / "model.onnx"
    outcome = run_cli("export", guide_run, "--output", exported, "--check-images", 4)
    assert outcome.exit_code == 0, outcome.stderr
    paths = [path for path, _ in test_images[:4]]
    expected = cnnlab.predict(guide_run, paths, precision="fp32")
    with running_server(exported, log=tmp_path / "server.log") as url:
        files = [("file", (path.name, path.read_bytes(), "image/png")) for path in paths]
        rows = httpx.post(f"{url}/predict", files=files).json()
        assert [row["label"] for row in rows] == [row["label"] for row in expected]
        assert [row["confidence"] for row in rows] == pytest.approx([row["confidence"] for row in expected],
                                                                     abs=1e-4)
        refused = httpx.post(f"{url}/explain", content=paths[0].read_bytes(), headers={"Content-Type": "image/png"})
        assert refused.status_code == 501 and "serve the run folder" in _one_line_reason(refused)
