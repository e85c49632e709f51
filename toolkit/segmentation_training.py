"""Supervised part segmentation for part_swap.py: `run.py --mode train_segmentation`.

Trains the config's `segmentation_params` network (modules.segmentation.SegmentationNetwork) with
cross-entropy on labelled frames: the dataset's frame-folder videos, with one uint8 label map per
frame in `<annotations>/<split>/<video>.npz` ('masks', (T, H, W)), as cartoon_faces.py writes them.
Writes `<run>/log.txt` (one line per epoch), `<run>/%08d-segmentation.pth.tar` ({'segmentation',
'epoch', 'iou'}) every epoch, and the per-part IoU on the test split after the last epoch.
"""
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from toolkit.datasets import FRAME_EXTENSIONS, read_image
from modules.checkpoint import save_checkpoint
from modules.errors import InputError
from modules.fileio import append_line

log = logging.getLogger(__name__)


class LabelledFrames(Dataset):
    """(frame, labels) items of one split: frame (3, H, W) float32 in [0, 1], labels (H, W) int64.

    is_train: each item is a random frame of video `index % num_videos`, mirrored left-right with
    probability 1/2 (np.random, seeded by run.py); else every frame of every video, in order.
    """

    def __init__(self, root_dir, annotations, split, frame_shape, num_repeats=1, is_train=True):
        folder, labels = Path(root_dir) / split, Path(annotations) / split
        if not folder.is_dir():
            raise InputError(f'{folder} not found: dataset_params.root_dir must hold {split}/ frame folders')
        self.videos = sorted(p.name for p in folder.iterdir() if p.is_dir() and (labels / f'{p.name}.npz').is_file())
        if not self.videos:
            raise InputError(f'no frame-folder videos with label maps in {folder} and {labels}: generate the data '
                             f'with cartoon_faces.py (PNG frames) or check segmentation_params.annotations')
        self.folder, self.labels_folder = folder, labels
        self.size = tuple(frame_shape[:2])
        self.num_repeats, self.is_train = num_repeats, is_train
        self._masks, self._files = {}, {}
        self.index = None if is_train else [(v, t) for v in self.videos for t in range(len(self._frame_files(v)))]

    def _frame_files(self, video):
        if video not in self._files:
            files = sorted(f for f in os.listdir(self.folder / video) if f.lower().endswith(FRAME_EXTENSIONS))
            self._files[video] = files
        return self._files[video]

    def _video_masks(self, video):
        if video not in self._masks:
            with np.load(self.labels_folder / f'{video}.npz') as data:
                masks = data['masks']
            if len(masks) != len(self._frame_files(video)):
                raise InputError(f'{self.labels_folder / video}.npz has {len(masks)} label maps for '
                                 f'{len(self._frame_files(video))} frames: regenerate the dataset')
            if tuple(masks.shape[1:]) != self.size:
                raise InputError(f'{self.labels_folder / video}.npz holds {masks.shape[2]}x{masks.shape[1]} label '
                                 f'maps; dataset_params.frame_shape is {self.size[1]}x{self.size[0]}')
            self._masks[video] = masks
        return self._masks[video]

    def __len__(self):
        return len(self.videos) * self.num_repeats if self.is_train else len(self.index)

    def __getitem__(self, index):
        if self.is_train:
            video = self.videos[index % len(self.videos)]
            t = np.random.randint(len(self._frame_files(video)))
        else:
            video, t = self.index[index]
        frame = read_image(self.folder / video / self._frame_files(video)[t])
        labels = self._video_masks(video)[t]
        if frame.shape[:2] != self.size:
            raise InputError(f'{self.folder / video}: frames are {frame.shape[1]}x{frame.shape[0]}, '
                             f'dataset_params.frame_shape is {self.size[1]}x{self.size[0]}')
        if self.is_train and np.random.rand() < 0.5:
            frame, labels = frame[:, ::-1], labels[:, ::-1]
        return (torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1))),
                torch.from_numpy(labels.astype(np.int64)))


def part_iou(network, dataset, device, batch_size=32):
    """Intersection over union of the predicted parts (argmax) with the labels, over every pixel of
    `dataset`: {part index: IoU} for every part that occurs in the labels or the predictions."""
    intersection, union = {}, {}
    if isinstance(network, torch.nn.Module):
        network.eval()
    with torch.inference_mode():
        for frames, labels in DataLoader(dataset, batch_size=batch_size):
            segmentation = network(frames.to(device))['segmentation']
            predicted = segmentation.argmax(dim=1).cpu()
            for part in range(segmentation.shape[1]):
                a, b = predicted == part, labels == part
                intersection[part] = intersection.get(part, 0) + int((a & b).sum())
                union[part] = union.get(part, 0) + int((a | b).sum())
    return {part: intersection[part] / union[part] for part in sorted(union) if union[part] > 0}


def mean_part_iou(iou):
    """Mean IoU over the parts, the background (0) left out."""
    parts = [value for part, value in iou.items() if part != 0]
    return sum(parts) / len(parts)


def train_segmentation(config, network, log_dir, device, num_workers=0):
    """Trains `network` (on `device`) with the config's segmentation_params.train_params; returns the
    test split's {part: IoU}."""
    params = config['segmentation_params']
    train_params = params['train_params']
    dataset_params = config['dataset_params']
    train_set = LabelledFrames(dataset_params['root_dir'], params['annotations'], 'train',
                               dataset_params['frame_shape'], train_params['num_repeats'])
    test_set = LabelledFrames(dataset_params['root_dir'], params['annotations'], 'test',
                              dataset_params['frame_shape'], is_train=False)
    if len(train_set) < train_params['batch_size']:
        raise InputError(f'segmentation_params.train_params.batch_size {train_params["batch_size"]} is larger than '
                         f'the {len(train_set)} training frames per epoch: lower it or raise num_repeats')
    loader = DataLoader(train_set, batch_size=train_params['batch_size'], shuffle=True, drop_last=True,
                        num_workers=num_workers, persistent_workers=num_workers > 0)
    optimizer = torch.optim.Adam(network.parameters(), lr=train_params['lr'])
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, train_params['epoch_milestones'], gamma=0.1)
    log_dir = Path(log_dir)
    log.info('training the segmentation network (%d parts: %s) on %d videos', len(params['part_names']),
             ', '.join(params['part_names']), len(train_set.videos))
    iou = {}
    for epoch in range(train_params['num_epochs']):
        network.train()
        total, count, started = 0.0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f'epoch {epoch + 1}/{train_params["num_epochs"]}', leave=False, dynamic_ncols=True)
        for frames, labels in bar:
            loss = F.cross_entropy(network(frames.to(device))['logits'], labels.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + loss.item(), count + 1
            bar.set_postfix(cross_entropy=f'{total / count:.4f}')
        scheduler.step()
        last = epoch == train_params['num_epochs'] - 1
        if last:
            iou = part_iou(network, test_set, device)
        line = f'{epoch:08d}) cross_entropy - {total / count:.5f}'
        append_line(log_dir / 'log.txt', line)
        save_checkpoint(log_dir / f'{epoch:08d}-segmentation.pth.tar', {'segmentation': network}, epoch,
                        iou={params['part_names'][part]: value for part, value in iou.items()})
        log.info('%s | %d iterations in %.1f s', line, count, time.perf_counter() - started)
    names = params['part_names']
    log.info('test split IoU: %s; mean over parts %.3f', ', '.join(f'{names[p]} {v:.3f}' for p, v in iou.items()),
             mean_part_iou(iou))
    return iou
