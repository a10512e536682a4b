# Two commands set everything up on a fresh Debian machine with Python 3.11:
#   make demo   create .venv, install cnnlab, train the guide's CNN on Fashion-MNIST and evaluate it
#   make test   install the development extras (and Fashion-MNIST and Chromium with apt) and run the
#               whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: demo test install dev fashion-mnist chromium ffmpeg rtsp-server clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

# Debian packages Fashion-MNIST; without it cnnlab downloads the dataset on first use.
fashion-mnist:
	@if [ ! -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's dataset-fashion-mnist package"; \
	  $(SUDO) apt-get install -y dataset-fashion-mnist || \
	  { $(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist; } || \
	  echo "could not install dataset-fashion-mnist; cnnlab will try to download Fashion-MNIST"; \
	fi

# Headless Chromium opens `cnnlab report`'s HTML page in tests/explain/test_report.py; without it
# those tests are skipped, so `make test` installs it as it installs Fashion-MNIST.
chromium:
	@if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium and chromium-driver packages (the report's browser tests)"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver || \
	  { $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; } || \
	  echo "could not install chromium; the report's browser tests will be skipped"; \
	fi

# The ffmpeg program serves a real RTMP stream on loopback in tests/video/test_streams.py (cnnlab
# itself decodes through PyAV's own FFmpeg libraries); without it those tests are skipped.
ffmpeg:
	@if ! command -v ffmpeg >/dev/null && command -v apt-get >/dev/null; then \
	  echo "installing Debian's ffmpeg package (the live-stream tests' RTMP server)"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null || \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; } || \
	  echo "could not install ffmpeg; the live-stream tests will be skipped"; \
	fi

# GStreamer's RTSP server, for the system Python, serves a real RTSP stream on loopback in the same
# tests (tests/video/rtsp_server.py); without it the RTSP test is skipped. No recommends: those
# would add ~100 packages (ImageMagick, fonts) the server does not use.
RTSP_PACKAGES := python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
rtsp-server:
	@if ! /usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0")' 2>/dev/null && \
	  command -v apt-get >/dev/null; then \
	  echo "installing GStreamer's RTSP server (the live-stream tests' RTSP server)"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(RTSP_PACKAGES) >/dev/null || \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(RTSP_PACKAGES) >/dev/null; } || \
	  echo "could not install GStreamer's RTSP server; the RTSP test will be skipped"; \
	fi

demo: install fashion-mnist
	$(BIN)/cnnlab train --data fashion-mnist --model guide-cnn --epochs 3 --name demo --exist-ok
	$(BIN)/cnnlab evaluate runs/demo

test: dev fashion-mnist chromium ffmpeg rtsp-server
	$(BIN)/python -m pytest -n auto --dist loadfile --no-loadscope-reorder

# Benchmarks (benchmarks/README.md) in their own venv: TensorFlow is large and .venv runs the tests.
# Results go to benchmarks/results/. Extra options: make bench BENCH_ARGS='--note "idle machine"'
# TTA_ARGS='--epochs 4 --set lr=0.01' (a cnnlab configuration for time_to_accuracy.py; by default the
# fast recipe, which aims at 93% Fashion-MNIST test accuracy; then a 1-epoch run of it, TTA_SHORT_ARGS,
# for the time to the Keras model's accuracy).
.PHONY: bench
BENCH_VENV := .venv-bench
TTA_ARGS ?= --epochs 5 --set recipe=fast
# The shortest fast-recipe run that reaches the guide-Keras model's 10-epoch accuracy.
TTA_SHORT_ARGS ?= --epochs 1 --set recipe=fast

$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet -e '.[bench]'
	touch $@

bench: $(BENCH_VENV)/.installed fashion-mnist
	$(BENCH_VENV)/bin/python benchmarks/train_throughput.py $(BENCH_ARGS)
	$(BENCH_VENV)/bin/python benchmarks/time_to_accuracy.py $(TTA_ARGS) $(BENCH_ARGS)
	$(BENCH_VENV)/bin/python benchmarks/time_to_accuracy.py $(TTA_SHORT_ARGS) $(BENCH_ARGS) \
		--output benchmarks/results/time_to_keras_accuracy
	$(BENCH_VENV)/bin/python benchmarks/step_time.py fast-cnn fast-cnn-v2 guide-cnn $(BENCH_ARGS)
	$(BENCH_VENV)/bin/python benchmarks/predict_throughput.py $(BENCH_ARGS)
	$(MAKE) bench-detection
	$(MAKE) bench-segmentation

# cnnlab's detector against Ultralytics YOLOv8n, both from scratch, the same training seconds each
# (benchmarks/README.md); DET_ARGS='--budget-seconds 600 --cnnlab-set lr=0.005' for other settings.
# Ultralytics (AGPL) is installed in .venv-bench only, by the bench extra; never a cnnlab dependency.
.PHONY: bench-detection
DET_ARGS ?= --budget-seconds 300 --batch-size 64
bench-detection: $(BENCH_VENV)/.installed fashion-mnist
	$(BENCH_VENV)/bin/python benchmarks/detection_vs_yolo.py $(DET_ARGS) $(BENCH_ARGS)

# cnnlab serve under load on loopback: dynamic batching vs one forward per request vs a plain FastAPI +
# ONNX Runtime endpoint, at 1, 8 and 64 clients, plus a soak and a full-queue burst (docs/deploy.md, ~3 min).
.PHONY: bench-serve
SERVE_ARGS ?=
bench-serve: $(BENCH_VENV)/.installed fashion-mnist
	$(BENCH_VENV)/bin/python benchmarks/serve_load.py $(SERVE_ARGS) $(BENCH_ARGS)

# cnnlab's U-Net against segmentation_models_pytorch's (resnet18 encoder), same loop, data and epochs
# (docs/segmentation-models.md); SEG_ARGS='--epochs 8 --cnnlab-model unet-small' for other settings.
.PHONY: bench-segmentation
SEG_ARGS ?=
bench-segmentation: $(BENCH_VENV)/.installed fashion-mnist
	$(BENCH_VENV)/bin/python benchmarks/segmentation_vs_smp.py $(SEG_ARGS) $(BENCH_ARGS)

# Frames a second on a video (160×160) for guide-cnn and cnnlab-det next to the decode-only rate, and
# Ultralytics YOLOv8n's predict as the peer (docs/video.md); VIDEO_ARGS='--threads 2 --size 320' for others.
.PHONY: bench-video
VIDEO_ARGS ?= --threads 2
bench-video: $(BENCH_VENV)/.installed fashion-mnist
	$(BENCH_VENV)/bin/python benchmarks/video_throughput.py $(VIDEO_ARGS) $(BENCH_ARGS)

# Embeddings: Fashion-MNIST classes 0–6 → unseen 7–9, embedding vs classifier features vs raw pixels,
# and identify's search over 100,000 vectors (docs/embeddings.md); EMB_ARGS='--epochs 10' for others.
.PHONY: bench-embedding
EMB_ARGS ?= --threads 2
bench-embedding: $(VENV)/.installed fashion-mnist
	$(BIN)/python benchmarks/embedding_open_set.py $(EMB_ARGS) $(BENCH_ARGS)

# The GPU benchmarks and the CUDA tests (a machine with a CUDA GPU; benchmarks/README.md, "On a GPU"):
# results in benchmarks/results/gpu/. GPU_NOTE='...' is stored with them.
.PHONY: bench-gpu
bench-gpu: $(VENV)/.installed-dev fashion-mnist
	PYTHON=$(BIN)/python NOTE="$(GPU_NOTE)" benchmarks/gpu.sh

clean:
	rm -rf runs .pytest_cache build src/*.egg-info
