"""`cnnlab serve`'s settings: where it listens, how it batches, and the limits every request meets."""

from __future__ import annotations

from dataclasses import dataclass

from cnnlab.errors import ConfigError

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"  # loopback: only this machine; --host 0.0.0.0 exposes it (with a warning)
    port: int = 8000  # 0: a free port, printed
    max_batch: int = 32  # images per forward pass; 1 = one forward per request
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_queue: int = 256  # requests admitted and waiting for the model; more get 503
    timeout_s: float = 30.0  # a request not answered by then gets 504
    max_body_bytes: int = 20 << 20  # a larger body gets 413, before it is read whole
    max_files: int = 64  # image files in one multipart request
    max_image_pixels: int = 89_478_485  # cnnlab's pixel budget (--max-image-pixels)
    max_connections: int = 1000  # uvicorn answers 503 beyond this many open connections
    threads: int = 0  # PyTorch's threads; 0: every core but one (the HTTP side needs one)

    def __post_init__(self) -> None:
        checks = [(0 <= self.port <= 65535, "--port must be 0 (a free port) to 65535"),
                  (self.max_batch >= 1, "--max-batch must be at least 1"),
                  (self.max_wait_ms >= 0, "--max-wait-ms must be 0 or more"),
                  (self.max_queue >= 1, "--max-queue must be at least 1"),
                  (self.timeout_s > 0, "--timeout must be more than 0 seconds"),
                  (self.max_body_bytes >= 1, "--max-body-bytes must be at least 1"),
                  (self.max_files >= 1, "--max-files must be at least 1"),
                  (self.max_image_pixels >= 1, "--max-image-pixels must be at least 1"),
                  (self.max_connections >= 1, "--max-connections must be at least 1"),
                  (self.threads >= 0, "--threads must be 0 (automatic) or more")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def exposed(self) -> bool:
        return self.host not in LOOPBACK_HOSTS
