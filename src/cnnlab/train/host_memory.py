"""Keep freed host memory in the process, so each batch does not pay for fresh pages.

PyTorch allocates CPU tensors with the C library's malloc. With glibc's defaults a block of more
than a few hundred kilobytes — a batch of activations — is either mapped fresh from the kernel
(`mmap`) or given back to it when freed (heap trimming), so the next batch's identical tensors
start on untouched pages and pay a page fault per 4 KiB. On a small model that is most of the
time: guide-cnn's inference on 2 CPU cores ran 2.2× faster once freed blocks were kept
(benchmarks/predict_throughput.py; docs/speed.md). TensorFlow and ONNX Runtime avoid the cost with
their own memory arenas; jemalloc or tcmalloc preloaded (`LD_PRELOAD`) do the same for PyTorch.

`keep_freed_memory()` raises glibc's two thresholds instead (`mallopt`), once per process. The price
is that up to `TRIM_THRESHOLD` bytes of freed memory stay with the process until it exits. It is
skipped where it does not apply or the user already chose: not glibc, `LD_PRELOAD` set, glibc's
own `MALLOC_*_` variables or `GLIBC_TUNABLES` set, or `CNNLAB_KEEP_FREED_MEMORY=0`.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 64 * 1024**2  # blocks below this come from the reusable heap, not fresh mappings
TRIM_THRESHOLD = 512 * 1024**2  # free memory at the heap's top kept for the next batch

OPT_OUT_VARIABLE = "CNNLAB_KEEP_FREED_MEMORY"
_USER_CHOICES = ("LD_PRELOAD", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")

_outcome: str | None = None


def keep_freed_memory() -> str:
    """Tune glibc's malloc for PyTorch's batch-sized tensors (once); returns what was done and why."""
    global _outcome
    if _outcome is None:
        _outcome = _tune()
    return _outcome


def _tune() -> str:
    if os.environ.get(OPT_OUT_VARIABLE, "1").strip().lower() in ("0", "false", "no", "off"):
        return f"skipped: {OPT_OUT_VARIABLE}={os.environ[OPT_OUT_VARIABLE]}"
    chosen = [name for name in _USER_CHOICES if os.environ.get(name)]
    if chosen:
        return f"skipped: the user chose the allocator's settings ({', '.join(chosen)})"
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return "skipped: not glibc"
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        accepted = (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                    and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    except (OSError, AttributeError) as error:
        return f"skipped: mallopt unavailable ({error})"
    return "kept" if accepted else "skipped: mallopt refused the thresholds"
