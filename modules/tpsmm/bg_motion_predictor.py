"""TPSMM's background motion: one affine transform per frame pair, from a 6-channel ResNet-18."""
import torch
from torch import nn

from modules.resnet import resnet18


class BGMotionPredictor(nn.Module):
    """(source_image, driving_image) (B, 3, H, W) each -> bg_param (B, 3, 3): [[A | t], [0, 0, 1]],
    mapping driving-frame coordinates to source coordinates. Starts at the identity (fc weight 0,
    bias [1, 0, 0, 0, 1, 0])."""

    def __init__(self):
        super().__init__()
        self.bg_encoder = resnet18(pretrained=False)
        self.bg_encoder.conv1 = nn.Conv2d(6, 64, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3), bias=False)
        self.bg_encoder.fc = nn.Linear(self.bg_encoder.fc.in_features, 6)
        self.bg_encoder.fc.weight.data.zero_()
        self.bg_encoder.fc.bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))

    def forward(self, source_image, driving_image):
        bs = source_image.shape[0]
        affine = self.bg_encoder(torch.cat([source_image, driving_image], dim=1)).view(bs, 2, 3)
        last_row = torch.tensor([0, 0, 1], dtype=affine.dtype, device=affine.device).expand(bs, 1, 3)
        return torch.cat([affine, last_row], dim=1)
