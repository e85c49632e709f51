"""Training logger and visualiser, with the original's files and formats.

`Logger` writes into `log_dir`:
- `log.txt`: one line per epoch, `00000012) perceptual - 81.23456; equivariance_value - 0.12345`,
  i.e. the epoch zero-filled to `zfill_num` digits, `") "`, then `"name - %.5f"` of the mean of each loss
  over the epoch's iterations, joined by `"; "`, in the order the losses first appeared. Nothing else
  is ever written to this file, so parsers of the original format keep working: the optional `extra`
  summary of `log_epoch` (speed, learning rate, ...) goes to the `logging` logger of this module only.
- `%08d-checkpoint.pth.tar`: the models and optimizers the train loop passes ({generator,
  discriminator, kp_detector, optimizer_generator, optimizer_discriminator, optimizer_kp_detector,
  epoch} in the original), every `checkpoint_freq` epochs and once more on leaving the `with` block.
- `train-vis/%08d-rec.png`: `Visualizer.visualize` of the last batch of each epoch.
Checkpoints and PNGs are written to a temp file and renamed, so a crash or a full disk never leaves a
truncated file where the last good one was.

In distributed training only rank 0 should write: build the Logger with `enabled=rank == 0` and keep
one code path, every method is a no-op when disabled.
"""
import collections
import difflib
import logging
from pathlib import Path

import imageio.v3 as iio
import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from skimage.draw import disk

from modules.checkpoint import load_state, save_checkpoint
from modules.fileio import atomic_path, make_folder, verify_png
from modules.util import kp_key
from modules.errors import ConfigError, OutputError, cannot_write

log = logging.getLogger(__name__)


def _scalar(name, value):
    """A loss value (float, 0-dim / 1-element array or tensor, any device or dtype) -> float."""
    if torch.is_tensor(value):
        value = value.detach().to('cpu', torch.float64)
    array = np.asarray(value, dtype=np.float64)
    if array.size != 1:
        raise ValueError(f'Logger.log_iter: loss {name!r} has shape {array.shape}; pass one number per loss '
                         f'(e.g. loss.mean())')
    return float(array.reshape(()))


def write_png_atomic(path, image):
    """Writes a uint8 (H, W, 3) image as PNG to a temp file in the same folder, checks that it reads
    back, then renames it onto `path` (OutputError, and the previous file kept, if that fails)."""
    with atomic_path(path, verify=verify_png) as tmp:
        iio.imwrite(tmp, image, extension='.png')
    return Path(path)


class Logger:
    """Per-epoch loss log, periodic checkpoints and reconstruction images of a training run.

    Used as the original train loop does:
        with Logger(log_dir, checkpoint_freq=..., visualizer_params=...) as logger:
            for epoch in range(start_epoch, num_epochs):
                for x in loader:
                    ...
                    logger.log_iter(losses={name: float or 0-dim array/tensor})
                logger.log_epoch(epoch, {'generator': g, ..., 'optimizer_kp_detector': o}, inp=x, out=out)

    enabled: False makes every method a no-op (nothing is created), for ranks other than 0.
    """

    def __init__(self, log_dir, checkpoint_freq=100, visualizer_params=None, zfill_num=8, log_file_name='log.txt',
                 enabled=True):
        self.enabled = enabled
        self.cpk_dir = Path(log_dir)
        self.visualizations_dir = self.cpk_dir / 'train-vis'
        self.zfill_num = zfill_num
        self.checkpoint_freq = checkpoint_freq
        # Built on every rank, so a bad colormap name fails everywhere alike.
        self.visualizer = Visualizer(**(visualizer_params or {}))
        self.epoch = 0
        self.models = None  # set by log_epoch; __exit__ saves only once it is set
        self.names = None  # loss names in order of first appearance, over the whole run
        self.loss_list = []  # this epoch's iterations: [{name: float}]
        self.log_file = None
        if enabled:
            make_folder(self.visualizations_dir)
            try:
                self.log_file = open(self.cpk_dir / log_file_name, 'a')
            except OSError as e:
                raise cannot_write(self.cpk_dir / log_file_name, e, kept=None) from e

    def _stem(self):
        return str(self.epoch).zfill(self.zfill_num)

    def checkpoint_path(self, epoch=None):
        """log_dir/<epoch zero-filled>-checkpoint.pth.tar (the current epoch by default)."""
        epoch = self.epoch if epoch is None else epoch
        return self.cpk_dir / f'{str(epoch).zfill(self.zfill_num)}-checkpoint.pth.tar'

    # ---- losses ----

    def log_iter(self, losses):
        """losses: {name: float, 0-dim array or one-element tensor} of one iteration."""
        if not self.enabled:
            return
        values = {name: _scalar(name, value) for name, value in losses.items()}
        if self.names is None:
            self.names = []
        # Values are matched by name: the original zipped them by dict order, which mislabels a
        # dict that comes in another order. New names are appended to the column order.
        self.names.extend(name for name in values if name not in self.names)
        self.loss_list.append(values)

    def log_scores(self, loss_names=None, extra=None):
        """Writes the epoch's line of means to log.txt (flushed) and clears the iteration list.
        extra: an optional summary, sent to `logging` only (never into log.txt)."""
        if not self.enabled:
            return None
        loss_names = self.names if loss_names is None else loss_names
        means = collections.OrderedDict()
        for name in loss_names or ():
            seen = [values[name] for values in self.loss_list if name in values]
            if seen:
                means[name] = sum(seen) / len(seen)
        self.loss_list = []
        if not means:
            log.warning('epoch %d: no losses were logged, no line written to %s', self.epoch, self.log_file.name)
            return None
        line = self._stem() + ') ' + '; '.join('%s - %.5f' % (name, value) for name, value in means.items())
        try:
            print(line, file=self.log_file)
            self.log_file.flush()
        except OSError as e:
            raise cannot_write(self.log_file.name, e, kept='the checkpoints written so far are kept') from e
        log.info('%s%s', line, f' | {extra}' if extra else '')
        return line

    # ---- images ----

    def visualize_rec(self, inp, out):
        """inp: the batch ({'driving', 'source'}: (B, 3, H, W)), out: the generator's output dict ->
        writes train-vis/<epoch>-rec.png."""
        if not self.enabled:
            return None
        image = self.visualizer.visualize(inp['driving'], inp['source'], out)
        return write_png_atomic(self.visualizations_dir / f'{self._stem()}-rec.png', image)

    # ---- checkpoints ----

    def save_cpk(self, emergent=False):
        """Saves self.models and self.epoch to checkpoint_path() (atomically). emergent: skip when
        that file exists already (used when leaving on an exception, see __exit__). Returns the path
        written, or None."""
        if not self.enabled or self.models is None:
            return None
        path = self.checkpoint_path()
        if emergent and path.exists():
            log.info('keeping %s: not overwriting it with the state of an interrupted epoch', path)
            return None
        save_checkpoint(path, self.models, self.epoch)
        self._saved_epoch = self.epoch
        log.info('saved checkpoint %s', path)
        return path

    @staticmethod
    def load_cpk(checkpoint_path, generator=None, discriminator=None, kp_detector=None,
                 optimizer_generator=None, optimizer_discriminator=None, optimizer_kp_detector=None, *,
                 inpainting_network=None, dense_motion_network=None, bg_predictor=None, avd_network=None,
                 optimizer=None, optimizer_bg_predictor=None, optimizer_avd=None):
        """Loads a checkpoint into the given models and optimizers -> its epoch.

        Strict (modules.checkpoint.load_state, weights_only): a missing entry or any key/shape
        mismatch raises a one-line CheckpointError. As in the original, a checkpoint without
        `discriminator` / `optimizer_discriminator` (the published ones) is accepted: those keep their
        current state, with a warning. TPSMM's keywords (inpainting_network, dense_motion_network,
        bg_predictor, avd_network, optimizer, optimizer_bg_predictor, optimizer_avd) work as in its
        Logger: the background predictor, the AVD network and their optimizers may be absent.
        """
        given = {'generator': generator, 'discriminator': discriminator, 'kp_detector': kp_detector,
                 'optimizer_generator': optimizer_generator, 'optimizer_discriminator': optimizer_discriminator,
                 'optimizer_kp_detector': optimizer_kp_detector, 'inpainting_network': inpainting_network,
                 'dense_motion_network': dense_motion_network, 'bg_predictor': bg_predictor,
                 'avd_network': avd_network, 'optimizer': optimizer, 'optimizer_bg_predictor': optimizer_bg_predictor,
                 'optimizer_avd': optimizer_avd}
        modules = {name: obj for name, obj in given.items() if obj is not None}
        return load_state(checkpoint_path, modules, optional=('discriminator', 'optimizer_discriminator', 'bg_predictor',
                                                              'avd_network', 'optimizer', 'optimizer_bg_predictor',
                                                              'optimizer_avd'))

    # ---- epoch / context ----

    def log_epoch(self, epoch, models, inp, out, extra=None):
        """End of an epoch, as the original: checkpoint when (epoch + 1) % checkpoint_freq == 0, then the
        log.txt line, then the visualisation. extra: optional summary string (e.g. speed), logged
        through `logging` at INFO only, so log.txt keeps the original format."""
        if not self.enabled:
            return
        self.epoch = int(epoch)
        self.models = models
        if (self.epoch + 1) % self.checkpoint_freq == 0:
            self.save_cpk()
        self.log_scores(self.names, extra=extra)
        if out is not None:  # (the AVD network's training has no images to show)
            self.visualize_rec(inp, out)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        """Saves the last checkpoint (if an epoch was logged) and closes log.txt.

        On a normal exit this is the original's save_cpk(), except that a checkpoint log_epoch has
        just written for the same epoch is not written twice. When leaving on an exception (Ctrl-C, crash mid-epoch) the models
        hold a partly trained next epoch: the original still overwrote the last epoch's checkpoint with
        it; we save with emergent=True instead, which keeps an existing file intact.
        """
        try:
            if exc_type is not None or getattr(self, '_saved_epoch', None) != self.epoch:
                try:
                    self.save_cpk(emergent=exc_type is not None)
                except OutputError as e:
                    if exc_type is None:
                        raise
                    # leaving on another error already: report that one, not this consequence
                    log.warning('%s', e)
        finally:
            if self.log_file is not None:
                try:
                    self.log_file.close()
                except OSError as e:  # the last line could not be flushed
                    if exc_type is None:
                        raise cannot_write(self.log_file.name, e, kept=None) from e
                finally:
                    self.log_file = None


class Visualizer:
    """Draws the reconstruction grid of `visualize`: one column per image kind, one row per sample.

    kp_size: radius in pixels of the keypoint disks. draw_border: whiten the left and right pixel
    column of each image. colormap: a matplotlib colormap name; keypoint k of K gets colormap(k / K).
    """

    def __init__(self, kp_size=5, draw_border=False, colormap='gist_rainbow'):
        self.kp_size = kp_size
        self.draw_border = draw_border
        try:
            self.colormap = matplotlib.colormaps[colormap]
        except KeyError:
            close = difflib.get_close_matches(str(colormap), list(matplotlib.colormaps), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ''
            raise ConfigError(f'visualizer_params: unknown colormap {colormap!r}{hint}') from None

    def draw_image_with_kp(self, image, kp_array):
        """image: (H, W, 3) float in [0, 1]; kp_array: (K, 2) (x, y) in [-1, 1] -> a copy with keypoint k
        drawn as a filled disk of radius kp_size in colour colormap(k / K)."""
        image = np.copy(image)
        kp_array = np.asarray(kp_array)
        spatial_size = np.array(image.shape[:2][::-1])[np.newaxis]  # (1, 2) = (W, H)
        # As the original: -1 maps to pixel 0 and +1 to W (resp. H), not to pixel centres.
        kp_array = spatial_size * (kp_array + 1) / 2
        num_kp = kp_array.shape[0]
        for kp_ind, (x, y) in enumerate(kp_array):
            rr, cc = disk((y, x), self.kp_size, shape=image.shape[:2])
            image[rr, cc] = np.array(self.colormap(kp_ind / num_kp))[:3]
        return image

    def create_image_column_with_kp(self, images, kp):
        """images: (B, H, W, 3), kp: (B, K, 2) -> (B * H, W, 3) column with keypoints drawn."""
        image_array = np.array([self.draw_image_with_kp(v, k) for v, k in zip(images, kp)])
        return self.create_image_column(image_array)

    def create_image_column(self, images):
        """images: (B, H, W, 3) -> (B * H, W, 3), stacked vertically."""
        if self.draw_border:
            images = np.copy(images)
            # The original indexes [:, :, [0, -1]] on (B, H, W, 3): that is the first and last pixel
            # COLUMN of every image (a vertical line on each side), the rows are left alone.
            images[:, :, 0] = 1.0
            images[:, :, -1] = 1.0
        return np.concatenate(list(images), axis=0)

    def create_image_grid(self, *args):
        """Each arg is a column: (images, kp) tuple -> column with keypoints, else images (B, H, W, 3)
        -> plain column. Columns are placed side by side -> (B * H, n_columns * W, 3)."""
        out = []
        for arg in args:
            if isinstance(arg, tuple):
                out.append(self.create_image_column_with_kp(arg[0], arg[1]))
            else:
                out.append(self.create_image_column(arg))
        return np.concatenate(out, axis=1)

    def visualize(self, driving, source, out):
        """driving, source: (B, 3, H, W) in [0, 1]; out: the generator's output dict -> uint8
        (B * H, n_columns * W, 3).

        Columns, in the original's order: source + kp_source; transformed_frame + transformed_kp (if
        present); driving + kp_driving; deformed (if present); prediction + kp_norm (if 'kp_norm');
        prediction; occlusion_map (if present); then for each of the K + 1 sparse_deformed images the
        image and its mask (background mask 0 as is, mask i in colour colormap((i - 1) / K), the colour
        of keypoint i - 1), and last the sum of the coloured masks. Low-resolution maps are resized to
        (H, W) with F.interpolate's default nearest mode.

        TPSMM's outputs are drawn the same way: keypoints 'fg_kp', the last (full-resolution) of its
        occlusion maps, and its deformed_source / contribution_maps as the warped images and masks.
        """
        def points(kp):  # FOMM's 'value' or TPSMM's 'fg_kp'
            return to_numpy(kp[kp_key(kp)])

        def to_numpy(tensor):  # any device or dtype -> float32 numpy on the CPU
            return tensor.detach().to('cpu', torch.float32).numpy()

        def to_hwc(tensor):  # (B, C, H, W) tensor -> (B, H, W, C) numpy
            return np.transpose(to_numpy(tensor), (0, 2, 3, 1))

        def resize(tensor, size):  # (B, C, h, w) -> (B, C, H, W), nearest as the original
            return F.interpolate(tensor.detach().to('cpu', torch.float32), size=size)

        images = []
        source = to_hwc(source)
        size = source.shape[1:3]  # (H, W)
        images.append((source, points(out['kp_source'])))

        # Equivariance visualisation
        if 'transformed_frame' in out:
            images.append((to_hwc(out['transformed_frame']), points(out['transformed_kp'])))

        images.append((to_hwc(driving), points(out['kp_driving'])))

        if 'deformed' in out:
            images.append(to_hwc(out['deformed']))

        # Result with and without keypoints
        prediction = to_hwc(out['prediction'])
        if 'kp_norm' in out:
            images.append((prediction, points(out['kp_norm'])))
        images.append(prediction)

        if 'occlusion_map' in out:
            occlusion_map = out['occlusion_map']
            if isinstance(occlusion_map, (list, tuple)):  # TPSMM: one per resolution, the finest last
                occlusion_map = occlusion_map[-1]
            occlusion_map = resize(occlusion_map.repeat(1, 3, 1, 1), size)  # (B, 3, H, W)
            images.append(np.transpose(occlusion_map.numpy(), (0, 2, 3, 1)))

        # Source deformed by each keypoint's (TPSMM: each spline's) transform (index 0: background) and its mask
        deformed_key, mask_key = ('sparse_deformed', 'mask') if 'sparse_deformed' in out else (
            'deformed_source', 'contribution_maps')
        if deformed_key in out:
            num_maps = out[deformed_key].shape[1]  # K + 1
            full_mask = []
            for i in range(num_maps):
                image = resize(out[deformed_key][:, i], size)  # (B, 3, H, W)
                mask = resize(out[mask_key][:, i:(i + 1)].repeat(1, 3, 1, 1), size)  # (B, 3, H, W)
                image = np.transpose(image.numpy(), (0, 2, 3, 1))
                mask = np.transpose(mask.numpy(), (0, 2, 3, 1))
                if i != 0:
                    color = np.array(self.colormap((i - 1) / (num_maps - 1)))[:3]
                else:
                    color = np.array((0, 0, 0))
                color = color.reshape((1, 1, 1, 3))
                images.append(image)
                # The background mask is shown as is (grey levels) but adds black to the sum.
                images.append(mask if i == 0 else mask * color)
                full_mask.append(mask * color)
            images.append(sum(full_mask))

        image = self.create_image_grid(*images)
        # The original casts 255 * image without clipping. Every column is in [0, 1] for the model's
        # outputs, where clipping changes nothing (still truncation, not rounding); outside it the
        # original's float -> uint8 cast is undefined (it wraps on x86), so we clip instead.
        return (255 * np.clip(image, 0, 1)).astype(np.uint8)
