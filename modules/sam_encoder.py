"""The image encoder of Segment Anything (Kirillov et al., ICCV 2023) with SAM's state-dict keys, for
CPABMM's keypoint semantic loss: the `image_encoder.*` entries of sam_vit_b_01ec64.pth load into
SamImageEncoder() (ViT-B: 768 wide, 12 blocks, windowed attention 14 x 14 except blocks 2, 5, 8, 11,
decomposed relative positions, a 256-channel neck).

(B, 3, S, S) normalised images (S = img_size, 1024 for SAM) -> (B, 256, S / 16, S / 16) features.
"""
import torch
import torch.nn.functional as F
from torch import nn

from modules.vit import Mlp


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of (B, C, H, W)."""

    def __init__(self, channels, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


def relative_positions(q_size, k_size, table):
    """The (q_size, k_size, C) rows of a relative-position table (2 max(q, k) - 1, C), resized linearly
    when its length differs."""
    length = 2 * max(q_size, k_size) - 1
    if table.shape[0] != length:
        table = F.interpolate(table.t()[None], size=length, mode='linear')[0].t()
    q = torch.arange(q_size, device=table.device)[:, None] * max(k_size / q_size, 1.0)
    k = torch.arange(k_size, device=table.device)[None, :] * max(q_size / k_size, 1.0)
    return table[((q - k) + (k_size - 1) * max(q_size / k_size, 1.0)).long()]


class Attention(nn.Module):
    def __init__(self, dim, num_heads, input_size):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x):  # (B, H, W, C)
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, h * w, -1).unbind(0)
        attention = (q * self.scale) @ k.transpose(-2, -1)
        r_q = q.reshape(b * self.num_heads, h, w, -1)
        rel_h = torch.einsum('bhwc,hkc->bhwk', r_q, relative_positions(h, h, self.rel_pos_h))
        rel_w = torch.einsum('bhwc,wkc->bhwk', r_q, relative_positions(w, w, self.rel_pos_w))
        attention = (attention.view(-1, h, w, h, w) + rel_h[..., :, None] + rel_w[..., None, :]).view(-1, h * w, h * w)
        x = (attention.softmax(dim=-1) @ v).view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4)
        return self.proj(x.reshape(b, h, w, -1))


class Block(nn.Module):
    """Pre-norm transformer block on (B, H, W, C), attention inside window_size windows (0 = global)."""

    def __init__(self, dim, num_heads, mlp_ratio, window_size, input_size):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, (window_size, window_size) if window_size else input_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), names=('lin1', 'lin2'))  # SAM's MLPBlock
        self.window_size = window_size

    def forward(self, x):
        shortcut = x
        x = self.norm1(x)
        if self.window_size:
            b, h, w, c = x.shape
            s = self.window_size
            pad_h, pad_w = (s - h % s) % s, (s - w % s) % s
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
            hp, wp = h + pad_h, w + pad_w
            windows = x.view(b, hp // s, s, wp // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s, s, c)
            x = self.attn(windows).view(b, hp // s, wp // s, s, s, c).permute(0, 1, 3, 2, 4, 5)
            x = x.reshape(b, hp, wp, c)[:, :h, :w]
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class SamImageEncoder(nn.Module):
    """SAM's ImageEncoderViT; defaults: ViT-B at 1024 x 1024."""

    def __init__(self, img_size=1024, patch_size=16, in_chans=3, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                 out_chans=256, window_size=14, global_attn_indexes=(2, 5, 8, 11)):
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, 0 if i in global_attn_indexes else window_size, (grid, grid))
            for i in range(depth))
        self.neck = nn.Sequential(nn.Conv2d(embed_dim, out_chans, 1, bias=False), LayerNorm2d(out_chans),
                                  nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False), LayerNorm2d(out_chans))

    def forward(self, x):
        x = self.patch_embed.proj(x).permute(0, 2, 3, 1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
