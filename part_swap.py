"""Part swap / face swap: a target video keeps its motion and everything else, but the chosen parts
(the face, the hair, the lips...) come from the source image.

    python part_swap.py --config config/cartoon-64.yaml --checkpoint pretrained/cartoon-64/cartoon-64.pth.tar \\
        --source_image source.png --target_video target.mp4 --source_mask source-mask.png --swap_index 1

As in motion-cosegmentation's part_swap.py, the swap happens in the generator's feature space; the
motion is FOMM's (keypoints, dense motion, occlusion map). For every target frame:

    out = decode(enc(target) * (1 - m) + warp(enc(source)) * occlusion * m)

where m is the blend mask of the swapped parts, resized to the feature maps. With a generator that
pastes the warped source (generator_params.paste_source, as the bundled model's), the pixels follow:

    out = m * paste(out, warp(source), occlusion) + (1 - m) * target

The mask comes from (one of):
  --source_mask IMAGE      the source's part-label map, moved to every target frame by the motion
  --target_masks PATH      one label map per target frame (a folder of PNGs, or a black-and-white video)
  --segmentation_checkpoint FILE   a segmentation network trained by run.py --mode train_segmentation
  --segmenter MOD:FUNC     your own face parser: frames (B, 3, H, W) in [0, 1] -> soft masks (B, P+1, H, W)
A mask image's pixel value is its part label (0 = background); a black-and-white mask is part 1.
With a segmenter, --use_source_segmentation segments the source and moves its mask like
--source_mask; by default every target frame is segmented. --hard uses 0/1 masks.

The motion is absolute by default (the source's parts go where the target's are); --relative and
--adapt_scale measure it from the first target frame as demo.py does.
"""
import argparse
import sys

from modules.limits import LIMITS_HELP
from toolkit.cli import option_defaults, run_entry_point
from toolkit.part_swap import PartSwapOptions, swap_parts


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[2:] + [LIMITS_HELP]))
    parser.add_argument('--config', required=True, help='the FOMM model\'s config (e.g. config/cartoon-64.yaml)')
    parser.add_argument('--checkpoint', required=True, help='its checkpoint')
    parser.add_argument('--source_image', required=True, help='image whose parts are swapped in')
    parser.add_argument('--target_video', required=True, help='video that keeps its motion and the other parts')
    parser.add_argument('--result_video', help='output mp4, the target\'s fps (default: %(default)s)')
    parser.add_argument('--swap_index',
                        help='parts to take from the source: numbers (1,2,5) or, with a segmenter that names its '
                             'parts, names (face,hair) (default: %(default)s)')
    parser.add_argument('--source_mask', help='the source image\'s part-label map (an image)')
    parser.add_argument('--target_masks',
                        help='one part-label map per target frame: a folder of images or a black-and-white video')
    parser.add_argument('--segmenter',
                        help='MODULE:FUNCTION or FILE.py:FUNCTION, a callable frames (B, 3, H, W) in [0, 1] -> soft '
                             'masks (B, P+1, H, W), channel 0 the background (a class is instantiated first)')
    parser.add_argument('--segmentation_checkpoint',
                        help='a segmentation network trained by run.py --mode train_segmentation with --config\'s '
                             'segmentation_params (its part_names work in --swap_index), e.g. '
                             'pretrained/cartoon-64/segmentation.pth.tar')
    parser.add_argument('--use_source_segmentation', action='store_true',
                        help='segment the source (not every target frame) and move its mask with the motion')
    parser.add_argument('--hard', action='store_true', help='0/1 masks (the argmax part per pixel), not soft ones')
    parser.add_argument('--relative', action='store_true',
                        help='motion relative to the first target frame (default: absolute keypoints)')
    parser.add_argument('--adapt_scale', action='store_true', help='scale the relative motion as demo.py does')
    parser.add_argument('--preview',
                        help='also write a source | target | mask | result .gif or .mp4 here')
    parser.add_argument('--batch_size', type=int, help='target frames per forward pass')
    parser.add_argument('--cpu', action='store_true', help='run on the CPU even if CUDA is available')
    parser.add_argument('--audio', action='store_true', help='copy the target video\'s audio into the result')
    parser.set_defaults(**option_defaults(PartSwapOptions))  # one source of defaults: the options class
    return parser


def main(argv=None):
    return run_entry_point(swap_parts, vars(build_parser().parse_args(argv)))


if __name__ == '__main__':
    sys.exit(main())
