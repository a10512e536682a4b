"""The peer of benchmarks/serve_load.py: a FastAPI + ONNX Runtime endpoint written the usual way, as
tutorials and most deployments write one — an `UploadFile`, Pillow, NumPy normalisation, one
`session.run` per request, softmax, JSON (the rows cnnlab serve answers with). Started by serve_load.py as

    SERVE_PEER_MODEL=model.onnx SERVE_PEER_SPEC=spec.json uvicorn serve_peer:app --port P
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import onnxruntime
from fastapi import FastAPI, File, UploadFile
from PIL import Image

spec = json.loads(open(os.environ["SERVE_PEER_SPEC"]).read())  # classes, channels, height, width, mean, std
session = onnxruntime.InferenceSession(os.environ["SERVE_PEER_MODEL"], providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name
mean = np.array(spec["mean"], np.float32)[:, None, None]
std = np.array(spec["std"], np.float32)[:, None, None]
app = FastAPI()


@app.post("/predict")
async def predict(file: UploadFile = File(...)) -> list[dict]:
    image = Image.open(io.BytesIO(await file.read())).convert("L" if spec["channels"] == 1 else "RGB")
    image = image.resize((spec["width"], spec["height"]), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, np.float32).reshape(spec["height"], spec["width"], -1).transpose(2, 0, 1) / 255.0
    logits = session.run(None, {input_name: ((pixels - mean) / std)[None]})[0][0]
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    best = int(probabilities.argmax())
    answer = {"label": spec["classes"][best], "confidence": float(probabilities[best])}
    # The rows cnnlab serve answers with at top_k=1, so both services write the same JSON.
    return [{"file": file.filename, **answer, "top_k": [answer]}]
