"""The service's fast paths, against the slow ones they replace: answers decoded once per batch give
the rows `task.predictions` gives image by image, and the usual multipart form split by hand gives
the files Starlette's parser gives (anything unusual is left to that parser)."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.serve.batching import Batcher
from cnnlab.serve.uploads import _boundary, simple_form


@pytest.fixture(scope="module")
def guide(guide_run):
    # fp32 whatever the CPU: the tests compare batched with one-by-one answers, which bf16's rounding
    # (different for different batch sizes) would blur.
    return cnnlab.load(guide_run, device="cpu", precision="fp32")


def _images(test_images, count: int) -> torch.Tensor:
    from PIL import Image

    return torch.from_numpy(np.stack([np.asarray(Image.open(path))[None] for path, _ in test_images[:count]]))


def test_answers_decoded_once_per_batch_match_each_image_alone(guide, test_images):
    images = _images(test_images, 6)
    calls = []

    def answers(outputs, origins):
        calls.append(len(outputs))
        return guide.task.predictions(outputs, top_k=3, origins=origins)

    batcher = Batcher(guide.outputs, max_batch=64, max_wait_s=0.05, max_queue=16)
    sizes = [1, 2, 3]
    starts = np.cumsum([0] + sizes)
    futures = [batcher.submit_per_image(images[start:start + size], answers, [(28, 28)] * size)
               for start, size in zip(starts, sizes)]  # queued before the worker starts: one batch
    batcher.start()
    try:
        rows = [row for future in futures for row in future.result(timeout=30)]
    finally:
        batcher.stop()
    assert calls == [6]  # one decoding for the three requests
    assert "cnnlab_batch_size_count 1\n" in batcher.metrics.exposition()  # one forward pass too
    alone = [guide.predict_arrays(images[index:index + 1], top_k=3)[0] for index in range(6)]
    assert [row["label"] for row in rows] == [row["label"] for row in alone]
    for row, reference in zip(rows, alone):
        assert [entry["label"] for entry in row["top_k"]] == [entry["label"] for entry in reference["top_k"]]
        assert row["confidence"] == pytest.approx(reference["confidence"], abs=1e-3)
    truths = [truth for _, truth in test_images[:6]]
    assert sum(row["label"] == truth for row, truth in zip(rows, truths)) >= 3


def test_a_failing_decoding_fails_every_request_of_its_batch_and_the_worker_goes_on(guide, test_images):
    images = _images(test_images, 3)

    def broken(outputs, origins):
        raise ValueError("no answer")

    batcher = Batcher(guide.outputs, max_batch=64, max_wait_s=0.05, max_queue=16)
    failing = [batcher.submit_per_image(images[i:i + 1], broken, [None]) for i in range(2)]
    batcher.start()
    try:
        for future in failing:
            with pytest.raises(ValueError, match="no answer"):
                future.result(timeout=30)
        after = batcher.submit_per_image(images[2:3], lambda outputs, _: outputs.argmax(1).tolist(), [None])
        assert after.result(timeout=30) == guide.outputs(images[2:3]).argmax(1).tolist()
    finally:
        batcher.stop()
    with pytest.raises(ValueError, match="2 images but 1 contexts"):
        batcher.submit_per_image(images[:2], broken, [None])


def _starlette_files(request: httpx.Request) -> list[tuple[str, str | None, bytes]]:
    """The form's files as Starlette's own parser reads them."""
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    body = request.read()

    async def parse():
        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
                 "headers": [(b"content-type", request.headers["content-type"].encode())]}
        form = await Request(scope, receive).form()
        return [(value.filename, value.content_type, await value.read()) for _, value in form.multi_items()
                if isinstance(value, UploadFile)]

    return asyncio.run(parse())


def test_the_usual_form_is_split_as_starlette_splits_it(test_images):
    png = test_images[0][0].read_bytes()
    request = httpx.Request("POST", "http://test/predict", data={"note": "x"}, files=[
        ("file", ("a.png", png, "image/png")),
        ("file", ("b c.txt", b"text\r\n--not the boundary", "text/plain")),
        ("file", ("d.png", b"", "image/png"))])
    boundary = _boundary(request.headers["content-type"])
    files = simple_form(request.read(), boundary)
    assert files == _starlette_files(request)
    assert [name for name, _, _ in files] == ["a.png", "b c.txt", "d.png"] and files[0][2] == png


@pytest.mark.parametrize("body", [
    b"preamble\r\n--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\nX\r\n--B--\r\n",
    b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''a.png\r\n\r\nX\r\n--B--\r\n",
    b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\\\".png\"\r\n\r\nX\r\n--B--\r\n",
    b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nWA==\r\n--B--\r\n",
    b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\nX\r\n--B",  # no end
    b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nX\r\n--B--\r\n",  # no blank line
])
def test_an_unusual_form_is_left_to_the_full_parser(body):
    assert simple_form(body, b"B") is None


def test_the_boundary_is_read_quoted_or_not():
    assert _boundary('multipart/form-data; boundary="a b"') == b"a b"
    assert _boundary("multipart/form-data; charset=utf-8; BOUNDARY=xyz") == b"xyz"
    assert _boundary("multipart/form-data") is None


def test_predict_answered_past_fastapi_checks_top_k_in_one_line(server, test_images):
    png = test_images[0][0].read_bytes()
    for bad in ("0", "1001", "x", "²"):
        response = httpx.post(f"{server}/predict", params={"top_k": bad}, content=png,
                              headers={"Content-Type": "image/png"})
        assert response.status_code == 422
        assert response.json() == {"detail": f"top_k must be a whole number from 1 to 1000 (got {bad!r})"}
    three = httpx.post(f"{server}/predict?top_k=3", files=[("file", ("a.png", png, "image/png"))])
    assert three.status_code == 200 and len(three.json()[0]["top_k"]) == 3
    assert httpx.get(f"{server}/predict").status_code == 405  # other methods still meet FastAPI's router
    assert "/predict" in httpx.get(f"{server}/openapi.json").json()["paths"]
