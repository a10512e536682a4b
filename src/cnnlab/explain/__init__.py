"""See inside the network: classic kernels, convolution step by step, filters, feature maps,
Grad-CAM and one HTML report per run.

    kernels.py       the registry of classic kernels (sobel-x, gaussian-blur, ...) and the matrix parser
    filtering.py     apply a kernel to an image with stride/padding, then pool: `cnnlab filter`
    reference.py     the guide's mathematics in NumPy: conv2d ... cross-entropy, backward, one SGD step
    conv_steps.py    one window's products and sum, and the scanning animation: `cnnlab explain-conv`
    scan_frames.py   the animation's frames, drawn with Pillow
    pictures.py      shared picture helpers: colour scales, image grids, uint8 pictures
    feature_maps.py  which layers are "stages", forward hooks that collect their outputs, grids
    filters.py       the first convolution's learned filters as a grid
    gradcam.py       Grad-CAM heatmaps and their overlays
    explain.py       `cnnlab explain`: all of the above for a run and some images
    report.py        `cnnlab report`: one self-contained HTML page per run
    report_data.py   what the report shows, gathered from the run folder (and `evaluate` if needed)
    html.py          inlined pictures, tables, the page and its style

Every module imports torch/numpy/matplotlib at the top; the CLI imports them inside its commands.
"""
