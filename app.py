"""A local web page for animation, part swap and the keypoints view, on this machine and offline.

    python app.py                                  # http://127.0.0.1:7860, the bundled cartoon model
    python app.py --checkpoints ~/models --port 8000

--checkpoints DIR offers every checkpoint under DIR that has its config beside it (name.yaml next to
name.pth.tar, or the one .yaml of its folder, as run.py's run folders); FOMM, TPSMM and CPABMM
alike. Only those can be chosen in the page. Requests queue (one runs at a time); each works in a
temporary folder that is removed afterwards. Nothing is shared beyond --host.
"""
import argparse
import sys

from modules.limits import LIMITS_HELP
from toolkit.cli import option_defaults, run_entry_point
from toolkit.webapp import AppOptions, serve


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:] + [LIMITS_HELP]))
    parser.add_argument('--host', help='address to listen on; 0.0.0.0 opens the page to the network (default: %(default)s)')
    parser.add_argument('--port', type=int, help='port (default: %(default)s)')
    parser.add_argument('--checkpoints', help='folder whose checkpoints (with their configs) the page offers')
    parser.add_argument('--queue_size', type=int,
                        help='requests that may wait while one runs; past that the page says it is busy '
                             '(default: %(default)s)')
    parser.add_argument('--max_upload_mb', type=int, help='largest upload, in MB (default: %(default)s)')
    parser.add_argument('--max_frames', type=int,
                        help='longest driving or target video, in frames (default: %(default)s)')
    parser.add_argument('--cpu', action='store_true', help='run on the CPU even if CUDA is available')
    parser.set_defaults(**option_defaults(AppOptions))
    return parser


def main(argv=None):
    options = vars(build_parser().parse_args(argv))
    return run_entry_point(serve, dict(options, on_ready=lambda url: print(f'serving on {url}', flush=True)),
                           describe=lambda _: None)


if __name__ == '__main__':
    sys.exit(main())
