"""`cnnlab serve`: a trained model behind HTTP, with a page anyone can use.

    >>> from cnnlab.serve import ServeSettings, serve
    >>> serve("runs/demo", ServeSettings(port=0, max_batch=32))   # doctest: +SKIP

server.py loads the model (only from a local path) and runs uvicorn; app.py is the FastAPI
application (endpoints, errors, metrics middleware); batching.py the model's worker thread and
its bounded queue; uploads.py the body limit and the decoding of uploads; metrics.py the Prometheus
text; pictures.py the PNGs (input view, Grad-CAM overlay); static/index.html the page at /.
"""

from cnnlab.serve.server import serve
from cnnlab.serve.settings import ServeSettings

__all__ = ["ServeSettings", "serve"]
