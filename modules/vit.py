"""A plain Vision Transformer with DINO's state-dict keys (Caron et al., ICCV 2021), for CPABMM's
structure-alignment loss: dino_vitbase8_pretrain.pth (ViT-B/8) loads into VisionTransformer() as it is.

    cls_token (1, 1, D), pos_embed (1, 1 + 784, D), patch_embed.proj (D, 3, p, p),
    blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm      (LayerNorm eps 1e-6)

Images (B, 3, H, W), already normalised, H and W multiples of the patch size; the position
embedding is resized (bicubic) when the token grid differs from the 28 x 28 it was trained on.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def qkv_heads(self, x):
        """(B, N, D) -> q, k, v, each (B, heads, N, D / heads)."""
        b, n, d = x.shape
        return self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x):
        q, k, v = self.qkv_heads(x)
        attention = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attention @ v).transpose(1, 2).reshape(x.shape))


class Mlp(nn.Module):
    """Linear, GELU, Linear; `names`: the two layers' attribute (state-dict) names (SAM: lin1, lin2)."""

    def __init__(self, dim, hidden, names=('fc1', 'fc2')):
        super().__init__()
        self.names = names
        setattr(self, names[0], nn.Linear(dim, hidden))
        setattr(self, names[1], nn.Linear(hidden, dim))

    def forward(self, x):
        first, second = (getattr(self, name) for name in self.names)
        return second(F.gelu(first(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, in_chans, embed_dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """DINO's ViT backbone (no head); defaults: ViT-B/8 at 224 x 224."""

    def __init__(self, img_size=224, patch_size=8, in_chans=3, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                 qkv_bias=True):
        super().__init__()
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (img_size // patch_size) ** 2 + 1, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def position_embedding(self, h, w):
        """(1, 1 + h w, D) for an h x w token grid."""
        grid = self.pos_embed[:, 1:]
        side = int(math.sqrt(grid.shape[1]))
        if (h, w) == (side, side):
            return self.pos_embed
        grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode='bicubic', align_corners=False)
        return torch.cat([self.pos_embed[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)

    def tokens(self, x):
        """(B, 3, H, W) -> (B, 1 + (H / p)(W / p), D): the class token, then the patches row by row."""
        h, w = x.shape[2] // self.patch_size, x.shape[3] // self.patch_size
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.position_embedding(h, w)

    def keys(self, x, layer):
        """The keys of block `layer`'s attention, heads concatenated: (B, 1 + N, D)."""
        x = self.tokens(x)
        for block in self.blocks[:layer]:
            x = block(x)
        _, k, _ = self.blocks[layer].attn.qkv_heads(self.blocks[layer].norm1(x))
        return k.transpose(1, 2).flatten(2)

    def forward(self, x):
        x = self.tokens(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
