"""Regenerates the README's pictures made with the bundled cartoon model:

    python docs/make_pictures.py      # -> docs/multi_face_cartoon.gif, docs/part_swap.gif

Part swap: the bundled source's whole face (its part-label map source-mask.png: face, eyes, brows,
nose, mouth) into the bundled driving video, as the README's command; source | target | mask | result.

Three cartoon identities (cartoon_faces.py, seed 2029) on one 384x160 canvas, their face boxes taken
from the drawings' ground-truth part masks (the LBP cascade is tuned for photographs and does not
find cartoon faces: multi_face.animate_faces takes `boxes=` for such cases), driven together by the
bundled driving video, pasted back with --ratio 0.45. Left: the source; right: the result.
"""
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from toolkit import cartoon as cartoon_faces  # noqa: E402
from toolkit.demo import BUNDLED_DEFAULTS, driving_frames, load_checkpoints, side_by_side  # noqa: E402
from toolkit.multi_face import animate_faces  # noqa: E402
from toolkit.video_io import open_writer, read_video_meta  # noqa: E402


def cartoon_group(size=128, identities=(1, 3, 5), seed=2029, margin=16):
    """uint8 (size + 2 margin, n * size, 3) canvas and the (n, 4) x1, y1, x2, y2 boxes of the faces
    (face, hair, eyes, brows, nose and mouth labels of the part masks)."""
    tiles, boxes = [], []
    for k, index in enumerate(identities):
        image, labels, _ = cartoon_faces.make_video(seed, index, 1, size)
        tiles.append(np.pad(image[0], ((margin, margin), (0, 0), (0, 0)), mode='edge'))
        head = np.isin(labels[0], [cartoon_faces.LABEL[p] for p in ('face', 'hair', 'eyes', 'brows', 'nose', 'mouth')])
        ys, xs = np.nonzero(head)
        boxes.append([xs.min() + k * size, ys.min() + margin, xs.max() + 1 + k * size, ys.max() + 1 + margin])
    return np.concatenate(tiles, axis=1), np.array(boxes, np.float64)


def part_swap_picture():
    import tempfile
    from toolkit import part_swap
    out = REPO / 'docs' / 'part_swap.gif'
    bundled = BUNDLED_DEFAULTS['checkpoint'].parent
    with tempfile.TemporaryDirectory() as tmp:
        part_swap.main(['--config', str(BUNDLED_DEFAULTS['config']), '--checkpoint', str(BUNDLED_DEFAULTS['checkpoint']),
                        '--source_image', str(bundled / 'source.png'), '--target_video', str(bundled / 'driving.mp4'),
                        '--source_mask', str(bundled / 'source-mask.png'), '--swap_index', '1,3,4,5,6', '--cpu',
                        '--result_video', str(Path(tmp) / 'swap.mp4'), '--preview', str(out)])


def main():
    part_swap_picture()
    group, boxes = cartoon_group()
    generator, kp_detector = load_checkpoints(str(BUNDLED_DEFAULTS['config']), str(BUNDLED_DEFAULTS['checkpoint']),
                                              cpu=True)
    driving = str(BUNDLED_DEFAULTS['driving_video'])
    fps = read_video_meta(driving)['fps']
    out = REPO / 'docs' / 'multi_face_cartoon.gif'
    frames = animate_faces(group, driving_frames(driving, (64, 64)), generator, kp_detector, boxes=boxes,
                           ratio=0.45, increase=0.25)
    with open_writer(out, fps) as writer:
        for frame in frames:
            writer.write(side_by_side([group, frame], min_size=160))
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
