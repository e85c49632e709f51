"""FOMM vs TPSMM vs CPABMM on the bundled synthetic cartoons at the same training budget.

    python benchmarks/compare_families.py [--epochs 3] [--work compare] [--cpu] [--only CPABMM ...]

Trains config/cartoon-64.yaml (FOMM: the bundled model's config; FOMM-original: the same with the
generator's skips and paste_source and the pixel L1 loss off, the original FOMM),
config/tpsmm-cartoon-64.yaml (TPSMM) and config/cpabmm-cartoon-64.yaml (CPABMM) from scratch with
run.py --mode train, the same data
(data/cartoon, from cartoon_faces.py --seed 0), batch size, perceptual loss and number of steps
(--epochs, each 300 steps of 12 frame pairs), one after the other, seed 0; transform dropout runs
during the first third of the epochs (TPSMM's recipe: 35 of 100). Then measures each with
benchmarks/cartoon_quality.py on a fresh dataset (seed 1): reconstruction L1 (and the no-motion
baseline), keypoint tracking error against the true landmarks, L1 on the quarter of test frames with
the largest pose gap to their source frame, and the seconds per frame of demo.py's default path;
plus the training time. Results accumulate in <work>/results.json; prints a Markdown table.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'benchmarks'))

FAMILIES = {'FOMM': REPO / 'config' / 'cartoon-64.yaml', 'FOMM-original': REPO / 'config' / 'cartoon-64.yaml',
            'TPSMM': REPO / 'config' / 'tpsmm-cartoon-64.yaml', 'CPABMM': REPO / 'config' / 'cpabmm-cartoon-64.yaml'}
# FOMM-original: the bundled config without the three options the original FOMM does not have
ORIGINAL_FOMM = {'generator_params': {'skips': False, 'paste_source': False}, 'loss_weights': {'l1': 0}}


def budget_config(config_path, epochs, work, original=False):
    """A copy of `config_path` trained for `epochs` epochs without learning-rate decay; original=True
    turns the generator's skips and paste_source and the pixel L1 loss off (the original FOMM)."""
    config = yaml.safe_load(Path(config_path).read_text())
    if original:
        config['model_params']['generator_params'].update(ORIGINAL_FOMM['generator_params'])
        config['train_params']['loss_weights'].update(ORIGINAL_FOMM['loss_weights'])
    params = config['train_params']
    params.update(num_epochs=epochs, epoch_milestones=[], checkpoint_freq=epochs)
    if 'dropout_epoch' in params:
        params.update(dropout_epoch=max(1, round(epochs * 0.35)), dropout_inc_epoch=1)
    config.pop('segmentation_params', None)
    path = Path(work) / (Path(config_path).stem + ('-original' if original else '') + '.yaml')
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def train(config, work, cpu):
    import run
    log_dir = Path(work) / 'log'
    before = set(log_dir.glob('*')) if log_dir.exists() else set()
    started = time.perf_counter()
    args = ['--config', str(config), '--mode', 'train', '--log_dir', str(log_dir), '--seed', '0']
    if run.main(args + (['--cpu'] if cpu else [])) != 0:
        raise SystemExit(f'training {config} failed')
    minutes = (time.perf_counter() - started) / 60
    (folder,) = set(log_dir.glob('*')) - before
    return sorted(folder.glob('*-checkpoint.pth.tar'))[-1], minutes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--epochs', type=int, default=3, help='training epochs per model (300 steps each)')
    parser.add_argument('--work', default='compare', help='folder for configs, runs and results')
    parser.add_argument('--cpu', action='store_true', help='train on the CPU even if CUDA is available')
    parser.add_argument('--only', choices=list(FAMILIES), nargs='+', default=list(FAMILIES),
                        help='train and measure these families only (in this order)')
    opt = parser.parse_args(argv)
    import cartoon_quality
    work = Path(opt.work)
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / 'results.json'
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if 'FOMM' in results and 'generator_options' not in results['FOMM']:
        # written before 'FOMM' meant the bundled config: that run was the original generator
        results['FOMM-original'] = results.pop('FOMM')
    for family in opt.only:
        config = budget_config(FAMILIES[family], opt.epochs, work, original=family == 'FOMM-original')
        checkpoint, minutes = train(config, work, opt.cpu)
        quality = cartoon_quality.evaluate(config, checkpoint, seed=1)
        options = yaml.safe_load(Path(config).read_text())['model_params']['generator_params']
        results[family] = {'epochs': opt.epochs, 'steps': opt.epochs * 300, 'train_minutes': minutes,
                           'checkpoint': str(checkpoint),
                           'generator_options': {k: options.get(k, False) for k in ('skips', 'paste_source')},
                           **quality}
        results_path.write_text(json.dumps(results, indent=1))
    def number(r, key, scale=1.0, digits=4):  # results.json may hold runs of an older version
        return f'{r[key] * scale:.{digits}f}' if key in r else 'n/a'
    first = next(iter(results.values()))
    print(f'| model | steps (batch 12) | training time | reconstruction L1 (no motion: {number(first, "no_motion_l1")}) | '
          f'L1 at large pose gaps (no motion: {number(first, "pose_gap_no_motion_l1")}) | keypoint error vs '
          f'landmarks | demo s/frame |')
    print('|---|---|---|---|---|---|---|')
    for family, r in results.items():
        print(f"| {family} | {r['steps']} | {r['train_minutes']:.0f} min | {number(r, 'reconstruction_l1')} | "
              f"{number(r, 'pose_gap_l1')} | {number(r, 'keypoint_error_px', digits=2)} px (constant: "
              f"{number(r, 'constant_landmarks_error_px', digits=2)} px) | "
              f"{number(r, 'seconds_per_frame', 1000, 1)} ms |")
    return 0


if __name__ == '__main__':
    sys.exit(main())
