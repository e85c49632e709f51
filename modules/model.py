"""Training losses (Sec. 3.3 and 3.4): the generator step and the discriminator step as whole
modules that return named, already-weighted losses (this suits DataParallel)."""
import torch
from torch import nn
from torch.autograd import grad

from modules.errors import ConfigError
from modules.util import AntiAliasInterpolation2d, make_coordinate_grid, unwrap
from modules.vgg import Vgg19, load_vgg19_weights  # noqa: F401  (Vgg19 is public here, as in the original)


class ImagePyramide(nn.Module):
    """Anti-aliased image pyramid: x (B, C, H, W) -> {'prediction_<scale>': (B, C, H*scale, W*scale)}.

    Keys use str(scale) as written in the config (1 -> 'prediction_1', 0.5 -> 'prediction_0.5').
    down_class: the down-sampling module of the model family, built as down_class(num_channels, scale)
    (FOMM's AntiAliasInterpolation2d by default; TPSMM passes its own, whose sizes round down).
    """

    def __init__(self, scales, num_channels, down_class=AntiAliasInterpolation2d):
        super().__init__()
        self.downs = nn.ModuleDict({str(scale).replace('.', '-'): down_class(num_channels, scale)
                                    for scale in scales})

    def forward(self, x):
        return {'prediction_' + scale.replace('-', '.'): down(x) for scale, down in self.downs.items()}


class Transform:
    """Random TPS transformation for the equivariance constraints (Sec. 3.4).

    theta = eye(2, 3) + N(0, sigma_affine^2) per batch element; with `sigma_tps` and `points_tps`
    also a thin-plate spline over a points_tps x points_tps control grid, whose radial basis
    d^2 log(d + 1e-6) uses the L1 distance |z - c|_1 (the original's choice, kept).
    The draws come from torch's global CPU generator, theta noise first, then the TPS parameters,
    always in float32; they are moved to the device and dtype of the coordinates when used.
    """

    def __init__(self, bs, sigma_affine, sigma_tps=None, points_tps=None):
        noise = torch.normal(mean=0, std=sigma_affine * torch.ones([bs, 2, 3]))
        self.theta = noise + torch.eye(2, 3).view(1, 2, 3)  # (bs, 2, 3)
        self.bs = bs
        self.tps = sigma_tps is not None and points_tps is not None
        if self.tps:
            self.control_points = make_coordinate_grid((points_tps, points_tps), dtype=noise.dtype).unsqueeze(0)
            self.control_params = torch.normal(mean=0, std=sigma_tps * torch.ones([bs, 1, points_tps ** 2]))

    def transform_frame(self, frame):
        """Warps frame (bs, C, H, W) by the transform (reflection padding) -> (bs, C, H, W)."""
        h, w = frame.shape[2:]
        grid = make_coordinate_grid((h, w), device=frame.device, dtype=frame.dtype).view(1, h * w, 2)
        grid = self.warp_coordinates(grid).view(self.bs, h, w, 2)
        # align_corners=False: torch>=1.3 default, what the original gets today; the fixtures encode it.
        return torch.nn.functional.grid_sample(frame, grid, padding_mode='reflection', align_corners=False)

    def warp_coordinates(self, coordinates):
        """coordinates: (bs or 1, N, 2) as (x, y) -> (bs, N, 2) transformed."""
        theta = self.theta.to(coordinates).unsqueeze(1)  # (bs, 1, 2, 3)
        transformed = torch.matmul(theta[:, :, :, :2], coordinates.unsqueeze(-1)) + theta[:, :, :, 2:]
        transformed = transformed.squeeze(-1)  # (bs, N, 2)
        if self.tps:
            control_points = self.control_points.to(coordinates)
            control_params = self.control_params.to(coordinates)
            distances = coordinates.view(coordinates.shape[0], -1, 1, 2) - control_points.view(1, 1, -1, 2)
            distances = torch.abs(distances).sum(-1)  # L1 distance to each control point, (., N, P*P)
            result = distances ** 2
            result = result * torch.log(distances + 1e-6)
            result = result * control_params
            result = result.sum(dim=2).view(self.bs, coordinates.shape[1], 1)
            transformed = transformed + result
        return transformed

    def jacobian(self, coordinates):
        """d warp_coordinates / d coordinates at `coordinates` (bs, N, 2) -> (bs, N, 2, 2), via autograd
        with create_graph=True (the loss backpropagates through it)."""
        if not coordinates.requires_grad:
            coordinates = coordinates.detach().requires_grad_(True)
        new_coordinates = self.warp_coordinates(coordinates)
        grad_x = grad(new_coordinates[..., 0].sum(), coordinates, create_graph=True)
        grad_y = grad(new_coordinates[..., 1].sum(), coordinates, create_graph=True)
        return torch.cat([grad_x[0].unsqueeze(-2), grad_y[0].unsqueeze(-2)], dim=-2)


def perceptual_loss(vgg, pyramide_generated, pyramide_real, scales, weights):
    """The multi-scale perceptual loss (Sec. 3.3; FOMM's and TPSMM's): over the pyramid scales and the
    VGG19 levels, sum of weights[i] * mean |vgg_i(generated) - vgg_i(real)|, the real side detached.
    Computed in float32 (the VGG may run under autocast); VGG levels after the last non-zero weight
    would add 0 * loss and are not computed."""
    levels = max(i + 1 for i, weight in enumerate(weights) if weight != 0)
    value_total = 0
    for scale in scales:
        x_vgg = vgg(pyramide_generated['prediction_' + str(scale)], levels)
        y_vgg = vgg(pyramide_real['prediction_' + str(scale)], levels)
        for i, weight in enumerate(weights[:levels]):
            value_total += weight * torch.abs(x_vgg[i].float() - y_vgg[i].detach().float()).mean()
    return value_total


def detach_kp(kp):
    """Keypoint dict with every tensor detached."""
    return {key: value.detach() for key, value in kp.items()}


def _loss_weights(train_params):
    weights = dict(train_params.get('loss_weights', {}))
    for name in ('generator_gan', 'discriminator_gan', 'equivariance_value', 'equivariance_jacobian', 'l1'):
        weights.setdefault(name, 0)
    weights.setdefault('perceptual', [0, 0, 0, 0, 0])
    weights.setdefault('feature_matching', [])
    return weights


def float32(tree):
    """Floating tensors in a (nested) dict cast to float32; everything else as it is."""
    if isinstance(tree, dict):
        return {key: float32(value) for key, value in tree.items()}
    return tree.float() if torch.is_tensor(tree) and tree.is_floating_point() else tree


class _TrainingStep(nn.Module):
    """What both training steps hold: the three networks, the train params and the loss weights.

    autocast_dtype: None (float32, the original), or torch.bfloat16 / torch.float16: the generator, the
    discriminator and the VGG19 run under torch.autocast of the inputs' device (mixed precision); the
    keypoint detector, the equivariance warps and every loss reduction stay float32, and the returned
    tensors are float32.
    """

    def __init__(self, kp_extractor, generator, discriminator, train_params, *, autocast_dtype=None):
        super().__init__()
        self.kp_extractor = kp_extractor
        self.generator = generator
        self.discriminator = discriminator
        self.train_params = train_params
        self.loss_weights = _loss_weights(train_params)
        self.autocast_dtype = autocast_dtype

    def _autocast(self, x, enabled=True):
        """Autocast on x's device (a no-op without autocast_dtype); enabled=False: float32 inside."""
        return torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype,
                              enabled=enabled and self.autocast_dtype is not None)


class GeneratorFullModel(_TrainingStep):
    """Generator step: keypoints, generation and every generator-side loss.

    x: {'source': (B, C, H, W), 'driving': (B, C, H, W)} in [0, 1] ->
    (losses, generated) with losses = {'perceptual', 'l1', 'gen_gan', 'feature_matching',
    'equivariance_value', 'equivariance_jacobian'} (each only when its weight is non-zero, already
    weighted, 0-dim) and generated = the generator's dict + 'kp_source', 'kp_driving' and, with an
    equivariance loss, 'transformed_frame', 'transformed_kp'.

    The perceptual loss needs the VGG19 ImageNet weights: they are read from
    train_params['vgg19_weights'] if set, else from torch.hub's cache (see modules.vgg); nothing
    is downloaded here.
    """

    def __init__(self, kp_extractor, generator, discriminator, train_params, *, autocast_dtype=None):
        super().__init__(kp_extractor, generator, discriminator, train_params, autocast_dtype=autocast_dtype)
        self.scales = train_params['scales']
        self.disc_scales = unwrap(discriminator).scales
        self.pyramid = ImagePyramide(self.scales, unwrap(generator).num_channels)

        if self.loss_weights['equivariance_jacobian'] != 0 and getattr(unwrap(kp_extractor), 'jacobian', None) is None:
            raise ConfigError('train_params.loss_weights.equivariance_jacobian is non-zero but the keypoint '
                              'detector estimates no jacobians (common_params.estimate_jacobian): set it to 0')
        if sum(self.loss_weights['perceptual']) != 0:
            self.vgg = Vgg19()
            load_vgg19_weights(self.vgg, train_params.get('vgg19_weights'))

    def forward(self, x):
        with self._autocast(x['source']):
            loss_values, generated = self._losses(x)
        return float32(loss_values), float32(generated)

    def _losses(self, x):
        # Keypoints stay float32 under autocast: the heatmaps' sharp softmax (temperature 0.1) turns
        # bfloat16 rounding into keypoint noise (measured on fixture-small: keypoint-detector gradients
        # at cosine 0.70 to the float32 ones in bfloat16, 0.92 with float32 keypoints).
        with self._autocast(x['source'], enabled=False):
            kp_source = self.kp_extractor(x['source'])
            kp_driving = self.kp_extractor(x['driving'])
        generated = self.generator(x['source'], kp_source=kp_source, kp_driving=kp_driving)
        generated.update({'kp_source': kp_source, 'kp_driving': kp_driving})

        loss_values = {}
        pyramide_real = self.pyramid(x['driving'])
        pyramide_generated = self.pyramid(generated['prediction'])

        weights = self.loss_weights
        if sum(weights['perceptual']) != 0:
            loss_values['perceptual'] = perceptual_loss(self.vgg, pyramide_generated, pyramide_real, self.scales,
                                                        weights['perceptual'])
        if weights['l1'] != 0:
            loss_values['l1'] = weights['l1'] * torch.abs(generated['prediction'].float() - x['driving']).mean()

        if weights['generator_gan'] != 0:
            # Generated first, then real: the order matters for the spectral-norm power iterations.
            discriminator_maps_generated = self.discriminator(pyramide_generated, kp=detach_kp(kp_driving))
            discriminator_maps_real = self.discriminator(pyramide_real, kp=detach_kp(kp_driving))
            value_total = 0
            for scale in self.disc_scales:
                value = ((1 - discriminator_maps_generated['prediction_map_%s' % scale].float()) ** 2).mean()
                value_total += weights['generator_gan'] * value
            loss_values['gen_gan'] = value_total

            if sum(weights['feature_matching']) != 0:
                value_total = 0
                for scale in self.disc_scales:
                    key = 'feature_maps_%s' % scale
                    # The real features are not detached, as in the original.
                    for i, (a, b) in enumerate(zip(discriminator_maps_real[key], discriminator_maps_generated[key])):
                        if weights['feature_matching'][i] == 0:
                            continue
                        value_total += weights['feature_matching'][i] * torch.abs(a.float() - b.float()).mean()
                loss_values['feature_matching'] = value_total

        if (weights['equivariance_value'] + weights['equivariance_jacobian']) != 0:
            with self._autocast(x['driving'], enabled=False):  # warps, keypoints and losses in float32
                transform = Transform(x['driving'].shape[0], **self.train_params['transform_params'])
                transformed_frame = transform.transform_frame(x['driving'])
                transformed_kp = self.kp_extractor(transformed_frame)
                generated['transformed_frame'] = transformed_frame
                generated['transformed_kp'] = transformed_kp

                if weights['equivariance_value'] != 0:
                    value = torch.abs(kp_driving['value'] - transform.warp_coordinates(transformed_kp['value']))
                    loss_values['equivariance_value'] = weights['equivariance_value'] * value.mean()

                if weights['equivariance_jacobian'] != 0:
                    jacobian_transformed = torch.matmul(transform.jacobian(transformed_kp['value']),
                                                        transformed_kp['jacobian'])
                    normed_driving = torch.inverse(kp_driving['jacobian'])
                    value = torch.matmul(normed_driving, jacobian_transformed)
                    eye = torch.eye(2, device=value.device, dtype=value.dtype).view(1, 1, 2, 2)
                    loss_values['equivariance_jacobian'] = (weights['equivariance_jacobian'] *
                                                            torch.abs(eye - value).mean())

        return loss_values, generated


class DiscriminatorFullModel(_TrainingStep):
    """Discriminator step (LSGAN): (x, generated) -> {'disc_gan': weighted 0-dim loss}.

    x['driving'] is the real image; generated['prediction'] is detached here.
    """

    def __init__(self, kp_extractor, generator, discriminator, train_params, *, autocast_dtype=None):
        super().__init__(kp_extractor, generator, discriminator, train_params, autocast_dtype=autocast_dtype)
        self.scales = unwrap(discriminator).scales
        self.pyramid = ImagePyramide(self.scales, unwrap(generator).num_channels)

    def forward(self, x, generated):
        with self._autocast(x['driving']):
            return float32(self._losses(x, generated))

    def _losses(self, x, generated):
        pyramide_real = self.pyramid(x['driving'])
        pyramide_generated = self.pyramid(generated['prediction'].detach())

        kp_driving = generated['kp_driving']
        discriminator_maps_generated = self.discriminator(pyramide_generated, kp=detach_kp(kp_driving))
        discriminator_maps_real = self.discriminator(pyramide_real, kp=detach_kp(kp_driving))

        value_total = 0
        for scale in self.scales:
            key = 'prediction_map_%s' % scale
            value = (1 - discriminator_maps_real[key].float()) ** 2 + discriminator_maps_generated[key].float() ** 2
            value_total += self.loss_weights['discriminator_gan'] * value.mean()
        return {'disc_gan': value_total}
