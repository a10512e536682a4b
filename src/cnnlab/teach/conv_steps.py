"""`cnnlab explain-conv`: the guide's worked example of one convolution step, on your own pixels.

At one position the kernel lies on a k×k window of the image; each pixel is multiplied with the
weight above it, and the k² products are summed into one number of the feature map. `conv_step`
computes that for the window centred on pixel (x, y), `format_step` prints it, and
`write_scan_animation` draws the kernel scanning a small crop while the feature map fills in.
The arithmetic is `cnnlab.teach.reference` (NumPy), the same the tests check PyTorch against.

Positions are pixel coordinates: x is the column (0 at the left), y the row (0 at the top).
Convolution here is 'valid' (no padding) with stride 1, so the window centred on (x, y) writes
into the feature map at (x − k//2, y − k//2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.errors import ConfigError
from cnnlab.teach import reference
from cnnlab.teach.kernels import Kernel
from cnnlab.pictures import format_number


@dataclass(frozen=True)
class ConvStep:
    x: int  # column of the window's centre pixel
    y: int  # row of the window's centre pixel
    window: np.ndarray  # (k, k) pixel values under the kernel
    kernel: Kernel
    products: np.ndarray  # (k, k) pixel × weight
    total: float  # the feature map's value

    @property
    def output_position(self) -> tuple[int, int]:
        """(x, y) of the value in the feature map ('valid' convolution, stride 1)."""
        radius = self.kernel.size // 2
        return self.x - radius, self.y - radius


def parse_position(text: str) -> tuple[int, int]:
    """'120,45' → (120, 45)."""
    parts = [part.strip() for part in str(text).split(",")]
    if len(parts) != 2 or not all(part.lstrip("-").isdigit() for part in parts):
        raise ConfigError(f"--at {text!r}: give the pixel as X,Y (column, row; 0,0 is the top-left), "
                          f"e.g. --at 120,45")
    return int(parts[0]), int(parts[1])


def check_position(x: int, y: int, shape: tuple[int, int], kernel: Kernel) -> None:
    height, width = shape
    if not (0 <= x < width and 0 <= y < height):
        raise ConfigError(f"--at {x},{y}: outside the {width}×{height} image; x (column) goes from 0 to "
                          f"{width - 1} and y (row) from 0 to {height - 1}")
    radius = kernel.size // 2
    if not (radius <= x < width - radius and radius <= y < height - radius):
        raise ConfigError(f"--at {x},{y}: a {kernel.size}×{kernel.size} window centred there would stick out "
                          f"of the {width}×{height} image; choose x from {radius} to {width - 1 - radius} "
                          f"and y from {radius} to {height - 1 - radius}")


def strongest_response(gray: np.ndarray, kernel: Kernel) -> tuple[int, int]:
    """(x, y) of the window centre where the kernel's sum is largest in size (positive or negative):
    where this kernel finds the most of what it looks for. Ties go to the first in reading order."""
    from cnnlab.teach.filtering import apply_kernel

    responses = np.abs(apply_kernel(gray[None], kernel).feature_map[0])  # windows inside the image only
    row, column = np.unravel_index(int(np.argmax(responses)), responses.shape)
    radius = kernel.size // 2
    return int(column) + radius, int(row) + radius


def conv_step(gray: np.ndarray, kernel: Kernel, x: int, y: int) -> ConvStep:
    """The window centred on (x, y) of a (H, W) image, its products with the kernel and their sum."""
    check_position(x, y, gray.shape, kernel)
    radius = kernel.size // 2
    window = gray[y - radius:y + radius + 1, x - radius:x + radius + 1].astype(np.float64)
    products, total = reference.multiply_and_sum(window, kernel.weights)
    return ConvStep(x, y, window, kernel, products, float(total))


def _matrix_lines(matrix: np.ndarray) -> list[str]:
    cells = [[format_number(value) for value in row] for row in matrix]
    width = max(len(cell) for row in cells for cell in row)
    return ["  ".join(cell.rjust(width) for cell in row) for row in cells]


def format_step(step: ConvStep, image_name: str, image_shape: tuple[int, int]) -> str:
    """The worked example as text: window, kernel, products side by side, then the sum."""
    size, radius = step.kernel.size, step.kernel.size // 2
    height, width = image_shape
    blocks = [("pixels under the kernel", _matrix_lines(step.window)),
              (f"kernel {step.kernel.name}", _matrix_lines(step.kernel.weights)),
              ("products (pixel × weight)", _matrix_lines(step.products))]
    widths = [max(len(title), *(len(line) for line in lines)) for title, lines in blocks]
    signs = ["   ×   ", "   =   "]

    def joined(parts: list[str], middles: list[str]) -> str:
        return (parts[0].ljust(widths[0]) + middles[0] + parts[1].ljust(widths[1]) + middles[1]
                + parts[2].ljust(widths[2])).rstrip()

    middle_row = size // 2
    lines = [
        f"{image_name}: {width}×{height} pixels; kernel {step.kernel.name} ({size}×{size}): "
        f"{step.kernel.description}",
        f"window centred on pixel x={step.x}, y={step.y} (columns {step.x - radius}–{step.x + radius}, "
        f"rows {step.y - radius}–{step.y + radius})",
        "",
        joined([title for title, _ in blocks], ["       ", "       "]),
    ]
    for row in range(size):
        middles = signs if row == middle_row else ["       ", "       "]
        lines.append(joined([block[row] for _, block in blocks], middles))
    terms = " + ".join(f"({format_number(p)})" if p < 0 else format_number(p) for p in step.products.flat)
    out_x, out_y = step.output_position
    lines += [
        "",
        f"sum of the {size * size} products: {terms}",
        f"          = {format_number(step.total)}",
        f"→ written into the feature map at x={out_x}, y={out_y} (the map is {width - 2 * radius}×"
        f"{height - 2 * radius}: no padding, stride 1)",
    ]
    return "\n".join(lines)


# --- the animation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanCrop:
    pixels: np.ndarray  # (positions + k − 1) squared crop of the image, float64
    top: int  # image row of the crop's first row
    left: int  # image column of the crop's first column
    feature_map: np.ndarray  # (rows, columns): one value per kernel position, by the NumPy reference


def scan_crop(gray: np.ndarray, kernel: Kernel, x: int, y: int, positions: int = 8) -> ScanCrop:
    """A crop around (x, y) with room for `positions`² kernel positions (fewer in a small image)."""
    check_position(x, y, gray.shape, kernel)
    size = kernel.size
    out_height, out_width = gray.shape[0] - size + 1, gray.shape[1] - size + 1
    rows, columns = min(positions, out_height), min(positions, out_width)
    out_x, out_y = x - size // 2, y - size // 2
    top = int(np.clip(out_y - rows // 2, 0, out_height - rows))
    left = int(np.clip(out_x - columns // 2, 0, out_width - columns))
    pixels = gray[top:top + rows + size - 1, left:left + columns + size - 1].astype(np.float64)
    feature_map = reference.conv2d(pixels[None, None], kernel.weights[None, None], np.zeros(1))[0, 0]
    return ScanCrop(pixels, top, left, feature_map)


def write_scan_animation(gray: np.ndarray, kernel: Kernel, x: int, y: int, path: Path, *, positions: int = 8,
                         frame_ms: int = 400, frames_dir: Path | None = None, chosen_by_user: bool = True) -> int:
    """An animated GIF, one frame per kernel position; returns the number of frames.

    `frames_dir` also saves every frame as a PNG (to look at one closely). `chosen_by_user`: X,Y came
    from --at (the orange box says so), not from `strongest_response`."""
    from cnnlab.teach.scan_frames import AT_POSITION, STRONGEST, draw_frames
    from cnnlab.io import atomic_path

    crop = scan_crop(gray, kernel, x, y, positions)
    radius = kernel.size // 2
    frames = draw_frames(crop, kernel, highlight=(x - radius - crop.left, y - radius - crop.top),
                         highlight_label=AT_POSITION if chosen_by_user else STRONGEST)
    durations = [frame_ms] * len(frames)
    durations[-1] = max(frame_ms, 2500)  # linger on the finished map before the loop starts again
    path = Path(path)
    with atomic_path(path) as temp:
        frames[0].save(temp, format="GIF", save_all=True, append_images=frames[1:], duration=durations,
                       loop=0)
    if frames_dir is not None:
        Path(frames_dir).mkdir(parents=True, exist_ok=True)
        for number, frame in enumerate(frames):
            frame.save(Path(frames_dir) / f"frame-{number:03d}.png")
    return len(frames)
