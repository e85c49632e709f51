"""TPSMM's keypoint detector: a ResNet-18 regressing K groups of 5 keypoints (no heatmaps, no jacobians)."""
import torch
from torch import nn

from modules.resnet import resnet18


class KPDetector(nn.Module):
    """image (B, 3, H, W) in [0, 1] (any size: the ResNet pools globally) ->
    {'fg_kp': (B, 5 * num_tps, 2) in (-1, 1), (x, y)}; keypoints 5k .. 5k + 4 drive TPS k."""
    # modules.inference.optimize_for_inference keeps direct convolutions here: keypoints feed TPS
    # solves and heatmap softmaxes that amplify Winograd's rounding, for well under 1 ms of gain
    direct_convolutions = True

    def __init__(self, num_tps, **kwargs):
        super().__init__()
        self.num_tps = num_tps
        self.fg_encoder = resnet18(pretrained=False)
        self.fg_encoder.fc = nn.Linear(self.fg_encoder.fc.in_features, num_tps * 5 * 2)  # keeps fc's key slot

    def forward(self, image):
        fg_kp = torch.sigmoid(self.fg_encoder(image)) * 2 - 1
        return {'fg_kp': fg_kp.view(image.shape[0], self.num_tps * 5, -1)}
