"""The reconstruction mode of run.py: each test video is re-synthesised from its own first frame.

Frame 0 is the source and every frame t (frame 0 included) drives it with absolute keypoints,
generator(source, kp_source=kp_detector(source), kp_driving=kp_detector(frame t)), as the original.
The L1 error between the prediction and the real frame measures how well the model reconstructs
motion (Sec. 4.1 of the paper). The work is batched as in toolkit.animation: source keypoints and
encoder features once per video, `batch_size` driving frames per forward pass.
"""
import csv
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from toolkit.animation import load_weights, prefetched, render_video
from toolkit.evaluation import Report, Totals, compare, extractor_label, load_extractor, write_csv
from modules.errors import ConfigError
from modules.fileio import atomic_path, make_folder

log = logging.getLogger(__name__)


def write_l1_csv(path, rows, mean):
    """`video,l1` rows, then a `mean,<mean>` row, written to a temp file and renamed onto `path`."""
    with atomic_path(path) as tmp, open(tmp, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(['video', 'l1'])
        writer.writerows([name, repr(float(l1))] for name, l1 in rows)
        writer.writerow(['mean', repr(float(mean))])
    return Path(path)


def reconstruction(config, generator, kp_detector, checkpoint, log_dir, dataset, batch_size=None, extractor=None):
    """Reconstructs the first reconstruction_params.num_videos videos of `dataset` (null = all).

    config: the loaded config (reconstruction_params: num_videos, format; visualizer_params).
    checkpoint: None when the models hold their weights already; a path or a loaded checkpoint dict
    is loaded strictly first (toolkit.animation.load_weights), as the original's contract. dataset: a test-mode
    FramesDataset (items {'video': float32 (C, T, H, W) in [0, 1], 'name'}). The models run on their
    own device, in eval mode.

    Writes into <log_dir>/reconstruction/ (names as the dataset lists the videos, extensions included):
        png/<video name>.png      the predicted frames side by side, uint8 (H, T * W, 3)
        <video name><format>      Visualizer.visualize of every frame (source, driving, deformed,
                                  prediction, occlusion map), 10 fps, .gif or an ffmpeg container
        l1.csv                    `video,l1` per video (mean over its frames of mean |prediction -
                                  driving|, pixels in [0, 1]), then `mean,<the reconstruction loss>`
        metrics.csv               with an extractor (reconstruction_params.extractor, or `extractor`:
                                  a name, 'module:Class' or an extractor object): the paper's
                                  L1, AKD, MKR and AED per video and pooled (toolkit.evaluation),
                                  the keypoints and identities taken from the png strip's frames and
                                  the driving frames, so `evaluate.py png/ <test videos>` gives the
                                  same AKD, MKR and AED; its L1 is the exact one of l1.csv
    Returns the reconstruction loss, as the original's printed "Reconstruction loss": the mean of
    the per-frame L1 over all frames of all videos (so a long video weighs more than a short one;
    this is not the plain average of the l1 column when the videos differ in length).

    Unlike the original, exactly num_videos videos are reconstructed: its `if it > num_videos: break`
    ran one more video than asked.
    """
    from toolkit.logger import Visualizer

    params = config['reconstruction_params']
    if extractor is None or isinstance(extractor, str):
        extractor = load_extractor(extractor or params.get('extractor'), 'reconstruction_params.extractor')
    out_dir = Path(log_dir) / 'reconstruction'
    png_dir = out_dir / 'png'
    num_videos = len(dataset) if params['num_videos'] is None else min(params['num_videos'], len(dataset))
    if num_videos == 0:
        raise ConfigError('reconstruction_params.num_videos is 0: nothing to reconstruct; '
                          'set a positive number or null (all test videos)')
    load_weights(checkpoint, generator, kp_detector)
    visualizer = Visualizer(**config['visualizer_params'])
    generator.eval()
    kp_detector.eval()
    make_folder(png_dir)

    rows, frame_l1 = [], []
    report = Report(extractor_label(extractor)) if extractor is not None else None
    bar = tqdm(prefetched(dataset, num_videos), total=num_videos, desc='reconstruction', unit='video')
    for x in bar:
        video = torch.from_numpy(x['video'])[None]  # (1, C, T, H, W)
        totals = []
        observe = None if report is None else \
            lambda strip, driving, l1: totals.append(compare(strip, driving, extractor, l1=l1))
        l1 = render_video(generator, kp_detector, video[:, :, 0], video, visualizer,
                          png_path=png_dir / f'{x["name"]}.png',
                          visualisation_path=out_dir / f'{x["name"]}{params["format"]}', batch_size=batch_size,
                          observe=observe)
        rows.append((x['name'], float(l1.mean())))
        frame_l1.append(l1)
        postfix = {'l1': f'{rows[-1][1]:.5f}'}
        if report is not None:
            report.add(x['name'], Totals.of(totals))
            postfix.update({k: f'{v:.3f}' for k, v in report.rows[-1][1].values().items() if k != 'l1'})
        bar.set_postfix(postfix)
        log.debug('%s: L1 %.6f over %d frames', x['name'], rows[-1][1], len(l1))
    loss = float(np.concatenate(frame_l1).mean())
    csv_path = write_l1_csv(out_dir / 'l1.csv', rows, loss)
    log.info('Reconstruction loss: %s (%d videos; per video: %s)', loss, len(rows), csv_path)
    if report is not None:
        metrics = report.mean()
        path = write_csv(out_dir / 'metrics.csv', report)
        log.info('L1 %.5f, AKD %.3f, MKR %.3f, AED %.3f (extractor %s; per video: %s)', metrics['l1'],
                 metrics['akd'], metrics['mkr'], metrics['aed'], report.extractor, path)
    return loss

