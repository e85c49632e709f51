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
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit import cartoon_quality  # noqa: E402
from toolkit.cartoon_quality import FAMILIES, budget_config, train  # noqa: E402

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--epochs', type=int, default=3, help='training epochs per model (300 steps each)')
    parser.add_argument('--work', default='compare', help='folder for configs, runs and results')
    parser.add_argument('--cpu', action='store_true', help='train on the CPU even if CUDA is available')
    parser.add_argument('--only', choices=list(FAMILIES), nargs='+', default=list(FAMILIES),
                        help='train and measure these families only (in this order)')
    opt = parser.parse_args(argv)
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
