"""Checks that a config, a checkpoint and the VGG19 weights fit together, before any long job.

    python -m modules.check --config config/vox-256.yaml --checkpoint vox-cpk.pth.tar
    python -m modules.check --config config/vox-256.yaml --vgg19          # perceptual-loss weights
    python -m modules.check --checkpoint some.pth.tar                      # which config fits it?
    python -m modules.check --config C --checkpoint run.pth.tar --export model.pth.tar   # inference-only copy

Prints what was checked; a problem is one line on stderr and exit status 2.
"""
import argparse
import logging
import sys

import torch

from modules.build import build_models
from modules.checkpoint import (OPTIMIZER_NAMES, display_path, fitting_configs, load_state, read_checkpoint,
                                save_checkpoint)
from modules.config import load_config
from modules.errors import UserError
from modules.families import family_of
from modules.vgg import Vgg19, fetch_vgg19_weights, load_vgg19_weights


def build_parser():
    parser = argparse.ArgumentParser(prog='python -m modules.check', description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', help='YAML config (e.g. config/vox-256.yaml)')
    parser.add_argument('--checkpoint', help='checkpoint in the original format (e.g. vox-cpk.pth.tar)')
    parser.add_argument('--vgg19', nargs='?', const='', metavar='PATH',
                        help='check the VGG19 weights of the perceptual loss: PATH, or the config\'s '
                             'train_params.vgg19_weights, or torch.hub\'s cache (downloaded there if a '
                             'network exists)')
    parser.add_argument('--export', metavar='OUT',
                        help='after the check, write an inference-only copy of --checkpoint to OUT: generator, '
                             'kp_detector and epoch in the original layout, no discriminator or optimizer state '
                             '(what demo.py and the reconstruction/animate modes need)')
    parser.add_argument('--verbose', action='store_true', help='log details')
    return parser


def check(config_path=None, checkpoint_path=None, vgg19=None, export=None):
    """Runs the checks; returns the report lines. Raises UserError on the first problem.
    export: path of an inference-only copy of the checkpoint to write (needs config and checkpoint)."""
    if export and not (config_path and checkpoint_path):
        raise UserError('--export needs --config and --checkpoint')
    report = []
    config = None
    if config_path:
        config = load_config(config_path)
        report.append(f'config {config_path}: valid')
    if checkpoint_path:
        checkpoint = read_checkpoint(checkpoint_path)
        if config is not None:
            family = family_of(config['model_params'])
            names = [n for n in family.model_names(config['model_params']) if n in checkpoint]
            models = build_models(config['model_params'], names=names)
            epoch = load_state(checkpoint, models, source=str(checkpoint_path), config_path=config_path)
            sizes = ', '.join(f'{n} {sum(p.numel() for p in m.parameters()):,} parameters' for n, m in models.items())
            report.append(f'checkpoint {checkpoint_path}: loads strictly ({sizes}; epoch {epoch})')
            extra = [n for n in OPTIMIZER_NAMES if n in checkpoint]
            if extra:
                report.append(f'  also holds {", ".join(extra)}')
            if export:
                wanted = [n for n in family.demo_models if n not in family.optional or n in models]
                missing = [n for n in wanted if n not in models]
                if missing:
                    raise UserError(f'{checkpoint_path} has no {" or ".join(missing)}: nothing to export')
                save_checkpoint(export, {n: models[n] for n in wanted}, epoch)
                report.append(f'wrote {export} ({", ".join(wanted)}, epoch {epoch})')
        else:
            fits, closest = fitting_configs(checkpoint)
            if fits:
                report.append(f'checkpoint {checkpoint_path} fits: ' + ', '.join(display_path(p) for p in fits))
            else:
                raise UserError(f'{checkpoint_path} fits no official config (closest: {display_path(closest) if closest else None}); '
                                f'use the config it was trained with')
    if vgg19 is not None:
        path = vgg19 or (config or {}).get('train_params', {}).get('vgg19_weights')
        path = fetch_vgg19_weights(path)
        vgg = load_vgg19_weights(Vgg19(), path)
        with torch.no_grad():
            shapes = [tuple(f.shape[1:]) for f in vgg(torch.rand(1, 3, 64, 64))]
        report.append(f'VGG19 weights {path}: loaded, outputs {shapes} for a 64x64 image')
    if not report:
        raise UserError('nothing to check: give --config, --checkpoint and/or --vgg19')
    return report


def main(argv=None):
    opt = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if opt.verbose else logging.WARNING, format='%(levelname)s: %(message)s')
    try:
        report = check(opt.config, opt.checkpoint, opt.vgg19, opt.export)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print('\n'.join(report))
    return 0


if __name__ == '__main__':
    sys.exit(main())
