"""TPSMM's networks behind FOMM's generator interface, so one animation core (toolkit.animation.Animator) serves
both families: demo.py, the reconstruction and animate modes, multi-face animation."""
from torch import nn


class TpsGenerator(nn.Module):
    """dense_motion_network + inpainting_network (+ bg_predictor) as one generator:

    encode(source_image) -> the inpainting network's encoder maps (computed once per source);
    forward(source_image, kp_driving, kp_source, source_features=None, driving_image=None) -> the
    inpainting network's dict ('prediction', 'deformed', 'occlusion_map' (list), 'contribution_maps',
    'deformed_source', ...).

    With a bg_predictor, the background motion bg_predictor(source, driving) is used (TPSMM's
    reconstruction.py does; its demo.py does not), so `uses_driving_image` asks callers for the driving
    frames. The modules are shared, not copied: their state dicts stay where they are.
    """

    def __init__(self, inpainting_network, dense_motion_network, bg_predictor=None):
        super().__init__()
        self.inpainting_network = inpainting_network
        self.dense_motion_network = dense_motion_network
        self.bg_predictor = bg_predictor
        self.uses_driving_image = bg_predictor is not None
        self.num_channels = inpainting_network.num_channels
        self.train(inpainting_network.training)  # a wrapper: the inpainting network's mode for all

    def encode(self, source_image):
        return self.inpainting_network.encode(source_image)

    def forward(self, source_image, kp_driving, kp_source, source_features=None, driving_image=None):
        bg_param = None
        if self.bg_predictor is not None:
            if driving_image is None:
                raise ValueError('TpsGenerator with a bg_predictor needs driving_image')
            bg_param = self.bg_predictor(source_image, driving_image)
        dense_motion = self.dense_motion_network(source_image=source_image, kp_driving=kp_driving,
                                                 kp_source=kp_source, bg_param=bg_param, dropout_flag=False)
        return self.inpainting_network(source_image, dense_motion, encoder_map=source_features)
