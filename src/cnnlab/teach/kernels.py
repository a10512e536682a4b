"""Classic image kernels, by name, and kernels typed in as a matrix.

The guide's filter is a small matrix of weights that slides over the image; these are the
hand-designed ones a CNN's first layer often ends up resembling. `get_kernel` takes a registry
name or a matrix written row by row, rows separated by `;` and values by `,` (fractions allowed):

    >>> get_kernel("sobel-x").weights
    array([[-1.,  0.,  1.],
           [-2.,  0.,  2.],
           [-1.,  0.,  1.]])
    >>> get_kernel("1/9,1/9,1/9; 1/9,1/9,1/9; 1/9,1/9,1/9").weights.sum()
    np.float64(1.0)

Like a CNN's convolution (and the guide), the kernel is laid on the pixels as written — it is
not flipped first, as a textbook convolution would — so sobel-x is positive where the image gets
brighter from left to right.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from cnnlab.errors import ConfigError
from cnnlab.registry import Registry

Matrix = tuple[tuple[float, ...], ...]

KERNELS: Registry[Matrix] = Registry("kernel")

_CLASSICS: tuple[tuple[str, str, Matrix], ...] = (
    ("identity", "leaves the image unchanged: 1 at the centre, 0 elsewhere",
     ((0, 0, 0), (0, 1, 0), (0, 0, 0))),
    ("sobel-x", "vertical edges: positive where the image brightens from left to right",
     ((-1, 0, 1), (-2, 0, 2), (-1, 0, 1))),
    ("sobel-y", "horizontal edges: positive where the image brightens from top to bottom",
     ((-1, -2, -1), (0, 0, 0), (1, 2, 1))),
    ("laplacian", "edges in every direction: the centre against its four neighbours",
     ((0, 1, 0), (1, -4, 1), (0, 1, 0))),
    ("outline", "edges in every direction: the centre against all eight neighbours",
     ((-1, -1, -1), (-1, 8, -1), (-1, -1, -1))),
    ("box-blur", "blur: the plain average of the 3×3 neighbourhood",
     tuple(tuple(1 / 9 for _ in range(3)) for _ in range(3))),
    ("gaussian-blur", "softer blur: a weighted average, the centre counting most",
     tuple(tuple(v / 16 for v in row) for row in ((1, 2, 1), (2, 4, 2), (1, 2, 1)))),
    ("sharpen", "sharpen: the centre boosted against its four neighbours",
     ((0, -1, 0), (-1, 5, -1), (0, -1, 0))),
    ("emboss", "relief: brightness changes along the diagonal look raised or sunken",
     ((-2, -1, 0), (-1, 1, 1), (0, 1, 2))),
)
for _name, _description, _matrix in _CLASSICS:
    KERNELS.add(_name, _matrix, description=_description)


@dataclass(frozen=True)
class Kernel:
    name: str  # a registry name, or "custom"
    weights: np.ndarray  # float64 (k, k), k odd
    description: str

    @property
    def size(self) -> int:
        return self.weights.shape[0]

    @property
    def has_negative_weights(self) -> bool:
        """Whether responses can be negative (edge detectors, and sharpen): a scale centred at 0."""
        return bool((self.weights < 0).any())

    @property
    def makes_an_image(self) -> bool:
        """Whether the output is a picture again: weights that add up to 1 keep a flat area's brightness
        (identity, blurs, sharpen, emboss), so the result is shown as pixels, 0–255. Edge detectors'
        weights add up to 0: they answer only to changes, with a sign, and are shown as a signed map."""
        return abs(float(self.weights.sum()) - 1.0) < 1e-6


def list_kernels() -> list[tuple[str, str]]:
    """(name, description) of every registered kernel."""
    return [(entry.name, entry.description) for entry in KERNELS]


def get_kernel(spec: str) -> Kernel:
    """A registered kernel by name, or a matrix "a,b,c;d,e,f;g,h,i" of any odd size."""
    text = spec.strip()
    if "," in text or ";" in text:
        return Kernel("custom", parse_matrix(text), "your matrix")
    entry = KERNELS.get(text)  # an unknown name lists the known ones and close matches
    return Kernel(entry.name, np.asarray(entry.builder, dtype=np.float64), entry.description)


def parse_matrix(text: str) -> np.ndarray:
    """ "a,b,c;d,e,f;g,h,i" → float64 (3, 3); values may be fractions such as 1/9.

    >>> parse_matrix("0,-1,0; -1,5,-1; 0,-1,0")[1]
    array([-1.,  5., -1.])
    """
    values = [[_number(cell, text) for cell in row.split(",")] for row in text.split(";")]
    size = len(values)
    widths = sorted({len(row) for row in values})
    if widths != [size]:
        raise ConfigError(f"--kernel {text!r}: a kernel must be square, {size} rows of {size} values "
                          f"(found rows of {', '.join(map(str, widths))} values); write rows separated "
                          f"by ';' and values by ',', e.g. \"-1,0,1;-2,0,2;-1,0,1\"")
    if size % 2 == 0:
        raise ConfigError(f"--kernel {text!r}: the kernel is {size}×{size}, but it needs an odd size "
                          f"(3×3, 5×5, ...) so that it has a centre pixel")
    return np.asarray(values, dtype=np.float64)


def _number(cell: str, text: str) -> float:
    cell = cell.strip()
    try:
        value = float(Fraction(cell))
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"--kernel {text!r}: {cell!r} is not a number; write rows separated by ';' and "
                          f"values by ',' (fractions like 1/9 are fine), or give a kernel name "
                          f"({', '.join(KERNELS.names())})") from None
    return value
