"""Teaching: the ideas of a CNN, shown on any image, with no trained model.

    kernels.py       the registry of classic kernels (sobel-x, gaussian-blur, ...) and the matrix parser
    filtering.py     apply a kernel to an image with stride/padding, then pool: `cnnlab filter`
    reference.py     the guide's mathematics in NumPy: conv2d ... cross-entropy, backward, one SGD step
    conv_steps.py    one window's products and sum, and the scanning animation: `cnnlab explain-conv`
    scan_frames.py   the animation's frames, drawn with Pillow
    augmentation.py  what each augmentation preset does to some images: `cnnlab augment`

Shared picture helpers (colour scales, grids, uint8 pictures) are in `cnnlab.pictures`.
"""
