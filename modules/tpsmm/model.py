"""TPSMM's training losses (Sec. 3.4): one module returning named, already-weighted losses. A family
with TPSMM's networks and losses of its own (CPABMM: modules.cpabmm.model) subclasses GeneratorFullModel
and returns them from its extra_losses hook."""
import torch
import torch.nn.functional as F
from torch import nn

from modules.model import ImagePyramide, perceptual_loss
from modules.tpsmm.anti_alias import TpsAntiAliasInterpolation2d
from modules.tpsmm.transform import TPS
from modules.util import unwrap
from modules.vgg import Vgg19, load_vgg19_weights


def dropout_probability(train_params, epoch):
    """TPS dropout probability at `epoch` (0 from dropout_epoch on): rises linearly from dropout_startp
    by dropout_maxp / dropout_inc_epoch per epoch, capped at dropout_maxp."""
    if epoch >= train_params.get('dropout_epoch', 0):
        return 0
    return min(epoch / train_params['dropout_inc_epoch'] * train_params['dropout_maxp'] + train_params['dropout_startp'],
               train_params['dropout_maxp'])


class GeneratorFullModel(nn.Module):
    """TPSMM's training step: keypoints, background motion, dense motion, inpainting and the losses.

    (x {'source', 'driving'}: (B, C, H, W) in [0, 1], epoch) -> (losses, generated): losses =
    {'perceptual', 'equivariance_value', 'warp_loss', 'bg'} (each only when its weight is non-zero,
    'bg' from bg_start on; already weighted, 0-dim), then the losses of extra_losses (none here);
    generated = the inpainting network's dict + 'kp_source', 'kp_driving' and, with the equivariance
    loss, 'transformed_frame', 'transformed_kp'.

    Random draws, in TPSMM's order: the TPS-dropout mask (while epoch < dropout_epoch), then the
    equivariance TPS (theta, then spline weights).
    """

    def __init__(self, kp_extractor, bg_predictor, dense_motion_network, inpainting_network, train_params, *kwargs):
        super().__init__()
        self.kp_extractor = kp_extractor
        self.inpainting_network = inpainting_network
        self.dense_motion_network = dense_motion_network
        self.bg_predictor = bg_predictor
        self.train_params = train_params
        self.scales = train_params['scales']
        self.pyramid = ImagePyramide(self.scales, unwrap(inpainting_network).num_channels,
                                     down_class=TpsAntiAliasInterpolation2d)
        self.loss_weights = train_params['loss_weights']
        self.bg_start = train_params.get('bg_start', 0)
        if sum(self.loss_weights['perceptual']) != 0:
            self.vgg = Vgg19()
            load_vgg19_weights(self.vgg, train_params.get('vgg19_weights'))

    def forward(self, x, epoch):
        kp_source = self.kp_extractor(x['source'])
        kp_driving = self.kp_extractor(x['driving'])
        bg_param = None
        if self.bg_predictor is not None and epoch >= self.bg_start:
            bg_param = self.bg_predictor(x['source'], x['driving'])
        dropout_p = dropout_probability(self.train_params, epoch)
        dense_motion = self.dense_motion_network(source_image=x['source'], kp_driving=kp_driving,
                                                 kp_source=kp_source, bg_param=bg_param,
                                                 dropout_flag=epoch < self.train_params.get('dropout_epoch', 0),
                                                 dropout_p=dropout_p)
        generated = self.inpainting_network(x['source'], dense_motion)
        generated.update({'kp_source': kp_source, 'kp_driving': kp_driving})

        weights = self.loss_weights
        loss_values = {}
        if sum(weights['perceptual']) != 0:
            loss_values['perceptual'] = perceptual_loss(self.vgg, self.pyramid(generated['prediction']),
                                                        self.pyramid(x['driving']), self.scales, weights['perceptual'])

        if weights['equivariance_value'] != 0:
            transform = TPS(mode='random', bs=x['driving'].shape[0], **self.train_params['transform_params'])
            grid = transform.transform_frame(x['driving'])
            transformed_frame = F.grid_sample(x['driving'], grid, padding_mode='reflection', align_corners=True)
            transformed_kp = self.kp_extractor(transformed_frame)
            generated['transformed_frame'] = transformed_frame
            generated['transformed_kp'] = transformed_kp
            warped = transform.warp_coordinates(transformed_kp['fg_kp'])
            loss_values['equivariance_value'] = weights['equivariance_value'] * torch.abs(
                kp_driving['fg_kp'] - warped).mean()

        if weights['warp_loss'] != 0:
            # the driving frame's encoder maps (finest first) against the warped source's (deepest
            # first); both sides are detached, so this trains the motion through the warp only
            encode_map = unwrap(self.inpainting_network).get_encode(x['driving'], generated['occlusion_map'])
            decode_map = generated['warped_encoder_maps']
            value = sum(torch.abs(encoded - decode_map[-i - 1]).mean() for i, encoded in enumerate(encode_map))
            loss_values['warp_loss'] = weights['warp_loss'] * value

        if weights['bg'] != 0 and bg_param is not None:
            cycle = torch.matmul(bg_param, self.bg_predictor(x['driving'], x['source']))
            eye = torch.eye(3, dtype=cycle.dtype, device=cycle.device).view(1, 1, 3, 3)
            loss_values['bg'] = weights['bg'] * torch.abs(eye - cycle).mean()

        loss_values.update(self.extra_losses(x, generated, epoch))
        return loss_values, generated

    def extra_losses(self, x, generated, epoch):
        """Hook for a subclass's losses: (the step's x, generated (with 'kp_source', 'kp_driving') and
        epoch) -> {name: already-weighted 0-dim loss}, added after TPSMM's (so after its random draws).
        TPSMM has none."""
        return {}


def random_scale(kp_params, scale):
    """Keypoints {'fg_kp': (B, N, 2)} rescaled about the image centre by diag(s_x, s_y) per sample,
    s drawn uniformly in [1 - scale, 1 + scale] (one torch.rand(B, 2) draw)."""
    factors = torch.rand(kp_params['fg_kp'].shape[0], 2) * (2 * scale) + (1 - scale)
    theta = torch.diag_embed(factors).unsqueeze(1).to(kp_params['fg_kp'])  # (B, 1, 2, 2)
    return {'fg_kp': torch.matmul(theta, kp_params['fg_kp'].unsqueeze(-1)).squeeze(-1)}


def avd_losses(kp_detector, avd_network, x, train_avd_params):
    """One step of TPSMM's train_avd: the AVD network re-poses the source's keypoints with randomly
    rescaled driving keypoints and must give back the driving ones. The keypoint detector runs without
    gradients (in whatever mode it is: TPSMM leaves it in train mode). -> ({'rec_kp': weighted loss},
    {'kp_source', 'kp_driving_gt', 'kp_driving_random', 'rec'})."""
    with torch.no_grad():
        kp_source = kp_detector(x['source'])
        kp_driving_gt = kp_detector(x['driving'])
        kp_driving_random = random_scale(kp_driving_gt, scale=train_avd_params['random_scale'])
    rec = avd_network(kp_source, kp_driving_random)
    loss = train_avd_params['lambda_shift'] * torch.abs(kp_driving_gt['fg_kp'] - rec['fg_kp']).mean()
    return {'rec_kp': loss}, {'kp_source': kp_source, 'kp_driving_gt': kp_driving_gt,
                              'kp_driving_random': kp_driving_random, 'rec': rec}
