"""CPABMM's two feature losses, each behind a pluggable, frozen feature extractor:

* StructureLoss (CPABMM's structure alignment, weight 0.1 in its code): the keys of block 11 of a
  DINO ViT-B/8 give a token self-similarity (cosine) matrix; the generated image's should equal the
  driving image's (MSE per image, summed over the batch; driving side without gradient). Images are
  resized so that their short side is 224 (long side at most 480) and normalised with ImageNet's
  statistics. Extractor: any module with `keys(images, layer) -> (B, T, C)` (modules.vit).
* KeypointSemanticLoss: CPABMM's configs weigh a "SAM-guided keypoint semantic loss" (loss_weights.sam)
  whose code is absent from its release; ours: the dense features of a frozen SAM image encoder are
  sampled (bilinearly) at the source and at the driving keypoints, and 1 - their cosine similarity,
  averaged over keypoints and batch, asks a keypoint to sit on the same part of the object in both
  frames. Gradients reach the keypoints through the sampling. Extractor: any module mapping
  (B, 3, S, S) normalised images to (B, C, h, w) features with an `img_size` attribute S
  (modules.sam_encoder).

The weights never download: load_extractor reads a local file with torch.load(weights_only=True).
configured_losses(train_params, ...) builds the losses a config asks for, with their extractors (the
wiring of CPABMM's training model, modules.cpabmm.model).
"""
import pickle
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from modules.errors import InputError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SAM_MEAN, SAM_STD = (123.675 / 255, 116.28 / 255, 103.53 / 255), (58.395 / 255, 57.12 / 255, 57.375 / 255)


def _normalise(images, mean, std):
    return (images - images.new_tensor(mean)[:, None, None]) / images.new_tensor(std)[:, None, None]


def _frozen(module):
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class StructureLoss(nn.Module):
    """(generated, driving) (B, 3, H, W) in [0, 1] -> 0-dim loss (unweighted)."""

    def __init__(self, extractor, layer=11, size=224, max_size=480):
        super().__init__()
        self.extractor = _frozen(extractor)
        self.layer, self.size, self.max_size = layer, size, max_size

    def train(self, mode=True):  # the extractor stays in eval mode
        super().train(mode)
        self.extractor.eval()
        return self

    def self_similarity(self, images):
        """(B, T, T) cosine similarities of the key tokens (class token first)."""
        h, w = images.shape[2:]
        scale = self.size / min(h, w)
        if max(h, w) * scale > self.max_size:
            scale = self.max_size / max(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        images = F.interpolate(images, size=size, mode='bilinear', align_corners=False, antialias=True)
        keys = F.normalize(self.extractor.keys(_normalise(images, IMAGENET_MEAN, IMAGENET_STD), self.layer), dim=-1)
        return keys @ keys.transpose(1, 2)

    def forward(self, generated, driving):
        with torch.no_grad():
            target = self.self_similarity(driving)
        return ((self.self_similarity(generated) - target) ** 2).mean(dim=(1, 2)).sum()


class KeypointSemanticLoss(nn.Module):
    """(source, driving (B, 3, H, W) in [0, 1], kp_source, kp_driving (B, K, 2) in [-1, 1]) -> 0-dim loss."""

    def __init__(self, extractor):
        super().__init__()
        self.extractor = _frozen(extractor)

    def train(self, mode=True):
        super().train(mode)
        self.extractor.eval()
        return self

    def features(self, images):
        size = self.extractor.img_size
        images = F.interpolate(images, size=(size, size), mode='bilinear', align_corners=False, antialias=True)
        with torch.no_grad():
            return self.extractor(_normalise(images, SAM_MEAN, SAM_STD))

    @staticmethod
    def sample(features, kp):
        """(B, C, h, w) at (B, K, 2) -> (B, K, C)."""
        return F.grid_sample(features, kp.unsqueeze(2).to(features.dtype), align_corners=False).squeeze(-1).transpose(1, 2)

    def forward(self, source, driving, kp_source, kp_driving):
        at_source = self.sample(self.features(source), kp_source)
        at_driving = self.sample(self.features(driving), kp_driving)
        return (1 - F.cosine_similarity(at_source, at_driving, dim=-1)).mean()


def load_extractor(kind, path, **architecture):
    """kind 'vit' (DINO ViT-B/8, for StructureLoss) or 'sam' (SAM ViT-B image encoder, for
    KeypointSemanticLoss) with weights from a local file; InputError (one line) if it is missing,
    unreadable or does not fit. `architecture`: constructor arguments other than ViT-B's."""
    from modules.sam_encoder import SamImageEncoder
    from modules.vit import VisionTransformer
    what = {'vit': ('train_params.vit_weights', 'DINO ViT-B/8 weights (dino_vitbase8_pretrain.pth)'),
            'sam': ('train_params.sam_model_path', 'SAM ViT-B weights (sam_vit_b_01ec64.pth)')}[kind]
    if path is None or not Path(path).is_file():
        raise InputError(f'{what[0]}: {path} is not a file; the loss needs local {what[1]} '
                         f'(nothing is downloaded): give the file, or set the loss weight to 0')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as e:
        raise InputError(f'{path}: cannot read {what[1]} safely ({type(e).__name__}); '
                         f'give a plain state-dict file') from e
    state = state.get('model', state.get('state_dict', state)) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise InputError(f'{path}: holds no state dict; give {what[1]}')
    if kind == 'sam':
        model = SamImageEncoder(**architecture)
        prefix = 'image_encoder.'
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)} or state
    else:
        model = VisionTransformer(**architecture)
        state = {k: v for k, v in state.items() if not k.startswith('head.')}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(f'{path}: does not fit the {kind.upper()} extractor ({str(e).splitlines()[0]} ...); '
                         f'give {what[1]}') from e
    return model


def configured_losses(train_params, structure_extractor=None, semantic_extractor=None):
    """The feature losses a config's train_params ask for -> (StructureLoss or None, KeypointSemanticLoss
    or None): the structure loss with use_vit_loss and a non-zero loss_weights.structure, the keypoint
    semantic loss with a non-zero loss_weights.sam. Each extractor is the module given, else it is
    loaded from the local file train_params names (vit_weights, sam_model_path; see load_extractor)."""
    weights = train_params['loss_weights']
    structure = semantic = None
    if train_params.get('use_vit_loss') and weights.get('structure', 0) != 0:
        if structure_extractor is None:
            structure_extractor = load_extractor('vit', train_params.get('vit_weights'))
        structure = StructureLoss(structure_extractor)
    if weights.get('sam', 0) != 0:
        if semantic_extractor is None:
            semantic_extractor = load_extractor('sam', train_params.get('sam_model_path'))
        semantic = KeypointSemanticLoss(semantic_extractor)
    return structure, semantic
