"""The toolkit's one frame resize, for every image or video frame brought to the model's frame size
(the dataset's frames, the demo's source image and driving frames, multi-face crops): bilinear with
scikit-image's Gaussian anti-aliasing, which acts only when shrinking. The original demo's
`skimage.transform.resize(image, size)` gives the same values for frames in [0, 1] (bilinear is
its default order, anti-aliasing its default when shrinking).

Tensors inside the networks are resized by modules.generator.resize instead; the training
augmentation's random rescaling (toolkit.augmentation) and face detection's gray downscaling
(toolkit.faces) are other jobs with their own rules.
"""
import numpy as np
from skimage.transform import resize


def resize_frame(frame, size):
    """(H, W, C) float in [0, 1] -> (h, w, C) float32 in [0, 1], size = (h, w); a frame already of
    that size is only converted to float32."""
    size = tuple(size)
    if frame.shape[:2] == size:
        return frame.astype(np.float32, copy=False)
    out = resize(frame, size, order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
