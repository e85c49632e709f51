"""Animate one source image with one driving video:

    python demo.py --config config/vox-256.yaml --checkpoint vox-cpk.pth.tar \\
        --source_image source.png --driving_video driving.mp4 --result_video result.mp4 --relative --adapt_scale

Without --config it runs the bundled model (pretrained/cartoon-64/) on its sample source image and
driving video, with --relative --adapt_scale, and also writes a side-by-side source | driving |
result preview: `python demo.py` alone works offline out of the box. TPSMM and CPABMM configs take
--mode standard|relative|avd (default relative), as TPSMM's demo.py.

Importable as the original: `from demo import load_checkpoints, make_animation` (FOMM's and TPSMM's
signatures; see toolkit.demo, which does the work).
"""
import argparse
import sys

from modules.limits import LIMITS_HELP
from toolkit.animation import BATCH_SIZE
from toolkit.cli import option_defaults, run_entry_point
from toolkit.demo import (BACKENDS, FACE_CONFIG_WORDS, FACE_DETECTORS, DemoOptions, all_modes, animate_video, find_best_frame,
                          load_checkpoints, make_animation, relative_kp)
from toolkit.faces import PHOTO_DETECTOR
from toolkit.multi_face import INCREASE, RATIO

__all__ = ['load_checkpoints', 'make_animation', 'find_best_frame', 'relative_kp']  # the originals' API


def build_parser():
    parser = argparse.ArgumentParser(
        description='Animate a source image with the motion of a driving video. Without --config: the bundled '
                    'cartoon model (pretrained/cartoon-64/) on its sample inputs, with --relative --adapt_scale and '
                    'a preview; with --config, the defaults are the original demo\'s.', epilog=LIMITS_HELP)
    parser.add_argument('--config',
                        help='path to the config (e.g. config/vox-256.yaml); default: the bundled model\'s')
    parser.add_argument('--checkpoint',
                        help='path to the checkpoint (default: the bundled model\'s without --config, else '
                             'vox-cpk.pth.tar)')
    parser.add_argument('--source_image',
                        help='image to animate, any size or mode (default: the bundled sample without --config, '
                             'else sup-mat/source.png)')
    parser.add_argument('--driving_video',
                        help='video whose motion is transferred (default: the bundled sample without --config, '
                             'else driving.mp4)')
    parser.add_argument('--result_video',
                        help='output video, .mp4 (or .mov, .mkv, .avi), same fps as the driving video; missing '
                             'folders are created, an earlier file is replaced only by a complete result '
                             '(default: result.mp4)')
    parser.add_argument('--preview',
                        help='also write a side-by-side source | driving | result .gif or .mp4 here (default: '
                             '<result>-preview.gif without --config, else none)')
    parser.add_argument('--relative', action=argparse.BooleanOptionalAction,
                        help='transfer the motion relative to the first (or best) driving frame, not absolute '
                             'keypoint positions (default: on without --config, else off)')
    parser.add_argument('--adapt_scale', action=argparse.BooleanOptionalAction,
                        help='scale the relative motion by the ratio of the keypoints\' convex-hull sizes '
                             '(default: on without --config, else off)')
    parser.add_argument('--mode', choices=all_modes(),
                        help='TPSMM / CPABMM configs: standard (absolute keypoints), relative (motion relative to the first '
                             'driving frame, scaled by the keypoints\' hull sizes) or avd (the AVD network re-poses '
                             'the source\'s keypoints) (default: relative; --relative / --adapt_scale are FOMM\'s). '
                             'FOMM configs: relative = --relative --adapt_scale, standard = neither')
    parser.add_argument('--backend', choices=BACKENDS,
                        help='torch: the networks in PyTorch; onnxruntime: the graphs export.py wrote to --onnx DIR, '
                             'run by ONNX Runtime on the CPU (FOMM and TPSMM configs; docs/onnx.md); onnxruntime-int8: the same '
                             'with the per-frame graph in int8 (export.py --int8) (default: %(default)s)')
    parser.add_argument('--onnx', metavar='DIR', help='with an onnxruntime backend: the folder export.py wrote for '
                                                      '--config and --checkpoint')
    parser.add_argument('--find_best_frame', action='store_true',
                        help='start from the driving frame whose keypoint layout is closest to the source\'s')
    parser.add_argument('--best_frame', type=int, help='start from this driving frame')
    parser.add_argument('--cpu', action='store_true', help='run on the CPU even if CUDA is available')
    parser.add_argument('--audio', action='store_true', help='copy the driving video\'s audio into the result')
    parser.add_argument('--batch_size', type=int,
                        help=f'driving frames animated at once, each applied to every animated face (default: '
                             f'{BATCH_SIZE} on CUDA; on the CPU 1, or 2 with --fast)')
    parser.add_argument('--multi_person', action='store_true',
                        help='animate every face found in the source image together (without it: the largest face) '
                             'and paste each back into the full-resolution image')
    parser.add_argument('--face_detector', choices=FACE_DETECTORS,
                        help='lbp: scikit-image\'s LBP cascade, hog: dlib\'s HOG detector, cnn: dlib\'s CNN detector '
                             '(slow; hog and cnn need dlib) find the faces in the source image, which are animated '
                             'and pasted back; no face found: the whole image, as with none; none: the whole image '
                             'resized to the model\'s frame size; auto: '
                             f'{PHOTO_DETECTOR} (lbp for cartoon configs or without dlib) with --multi_person or '
                             'when the config\'s file '
                             f'name contains {", ".join(FACE_CONFIG_WORDS)} and the source is not already the '
                             'model\'s frame size, else none (default: auto; docs/faces.md compares the detectors)')
    parser.add_argument('--ratio', type=float,
                        help='radius of the pasted part of each face crop, as a fraction of the crop\'s size, in '
                             f'(0, 1]; the mask fades out softly towards it (default: {RATIO}; 0.4-0.5 suit most '
                             'photos)')
    parser.add_argument('--increase', type=float,
                        help='each face box grows by this fraction of its longer side on each side into a square '
                             f'crop, as crop-video.py\'s --increase (default: {INCREASE}: twice the box)')
    parser.add_argument('--fast', action='store_true',
                        help='faster, slightly less exact: the generator runs in bfloat16 (CPU) / float16 (CUDA) '
                             'autocast, channels-last, its residual blocks in int8 on x86 CPUs; keypoints stay '
                             'float32 (benchmarks/animate.py measures its speed and its PSNR against the exact path)')
    parser.set_defaults(**option_defaults(DemoOptions))  # one source of defaults: the options class
    return parser


def main(argv=None):
    return run_entry_point(animate_video, vars(build_parser().parse_args(argv)))


if __name__ == '__main__':
    sys.exit(main())
