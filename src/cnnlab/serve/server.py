"""`serve()`: load a model from a local path and answer HTTP requests for it with uvicorn."""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path
from typing import Callable

from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.serve.settings import ServeSettings

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def check_installed() -> None:
    """A clear error, not an ImportError, when the `serve` extra is missing."""
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401  (python-multipart: FastAPI's form parser)
        import uvicorn  # noqa: F401
    except ImportError as missing:
        raise CnnlabError(f"cnnlab serve needs FastAPI, uvicorn and python-multipart ({missing.name} is missing): "
                          "pip install 'cnnlab[serve]'") from None


def check_local(model: str | Path) -> None:
    """Models are loaded only from this machine's files, named when the service starts."""
    if _URL.match(str(model)):
        raise ConfigError(f"{model}: cnnlab serve loads a model only from a local path (a run folder, a run name, "
                          "a .safetensors or an exported file); download it first")


def torch_threads(settings: ServeSettings) -> int:
    """PyTorch's threads for the model's worker: every core but one, which the event loop needs for
    HTTP and decoding (on 2 cores: 1 and 1), unless --threads says otherwise."""
    if settings.threads:
        return settings.threads
    return max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) - 1)


def bind(settings: ServeSettings) -> socket.socket:
    """The listening socket, bound now so that --port 0's free port is known before serving."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Answers are written in two parts (head, body); without TCP_NODELAY (which connections accepted
    # from a socket handed to uvicorn do not get) the body waits for the client's delayed ACK: 40 ms.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        listener.bind((settings.host, settings.port))
    except OSError as error:
        listener.close()
        raise ConfigError(f"--host {settings.host} --port {settings.port}: cannot listen there "
                          f"({error.strerror or error}); --port 0 picks a free port") from None
    listener.listen(2048)
    listener.setblocking(False)
    return listener


def serve(model: str | Path, settings: ServeSettings | None = None, *, device: str = "auto",
          runs_dir: str | Path = "runs", precision: str = "auto",
          announce: Callable[[str], None] = lambda text: print(text, flush=True)) -> None:
    """Serve `model` (a run folder or name, a .safetensors file, or an exported model that
    `cnnlab.trained.load` reads) until interrupted; `announce` gets the URL line.

    >>> serve("runs/demo", ServeSettings(port=0))   # doctest: +SKIP
    cnnlab serve: guide-cnn (classification) at http://127.0.0.1:41233/  (API docs: /docs)
    """
    settings = settings or ServeSettings()
    check_local(model)
    check_installed()
    import torch
    import uvicorn

    from cnnlab.serve.app import create_app
    from cnnlab.trained import load

    torch.set_num_threads(torch_threads(settings))
    trained = load(model, device=device, runs_dir=runs_dir, precision=precision)
    app = create_app(trained, settings)
    listener = bind(settings)
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if settings.exposed:
        print(f"warning: listening on {settings.host}: anyone who can reach this machine can use the model; "
              "put it behind a reverse proxy with TLS and authentication (docs/deploy.md)", file=sys.stderr,
              flush=True)
    announce(f"cnnlab serve: {trained.info.architecture.label or trained.info.architecture.name} "
             f"({trained.task.name}) at http://{shown}:{port}/  (API docs: /docs)")
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=5,
                            limit_concurrency=settings.max_connections, server_header=False)
    uvicorn.Server(config).run(sockets=[listener])
