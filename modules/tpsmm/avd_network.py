"""TPSMM's animation-via-disentanglement (AVD) network (from MRAA, Siarohin et al. 2021): re-poses the
source's keypoints with the driving keypoints' pose, keeping the source's identity (shape)."""
import torch
from torch import nn


def _mlp(in_features, widths, out_features):
    """Linear -> BatchNorm1d -> ReLU for each width, then Linear: TPSMM's Sequential layout (indices
    0, 1, 2 per hidden layer, the output Linear last)."""
    layers = []
    for width in widths:
        layers += [nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU(True)]
        in_features = width
    return nn.Sequential(*layers, nn.Linear(in_features, out_features))


class AVDNetwork(nn.Module):
    """(kp_source, kp_random) {'fg_kp': (B, 5 * num_tps, 2)} -> {'fg_kp': (B, 5 * num_tps, 2)}: the
    decoder reads [pose embedding of kp_random, identity embedding of kp_source]. Hidden widths
    256/512/1024 are fixed (as TPSMM); train-mode BatchNorm1d needs B > 1."""

    def __init__(self, num_tps, id_bottle_size=64, pose_bottle_size=64):
        super().__init__()
        input_size = 5 * 2 * num_tps
        self.num_tps = num_tps
        self.id_encoder = _mlp(input_size, (256, 512, 1024), id_bottle_size)
        self.pose_encoder = _mlp(input_size, (256, 512, 1024), pose_bottle_size)
        self.decoder = _mlp(pose_bottle_size + id_bottle_size, (1024, 512, 256), input_size)

    def forward(self, kp_source, kp_random):
        bs = kp_source['fg_kp'].shape[0]
        pose_emb = self.pose_encoder(kp_random['fg_kp'].view(bs, -1))
        id_emb = self.id_encoder(kp_source['fg_kp'].view(bs, -1))
        rec = self.decoder(torch.cat([pose_emb, id_emb], dim=1))
        return {'fg_kp': rec.view(bs, self.num_tps * 5, -1)}
