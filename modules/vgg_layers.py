"""The layers of torchvision's `vgg19().features`, shared by the perceptual loss's VGG19
(modules.vgg) and its portable stand-in weights (modules.vgg_portable)."""
from torch import nn

# torchvision's VGG19 configuration "E": conv widths, 'M' = 2x2 max-pool.
_VGG19_CFG = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M']


def vgg19_feature_layers(num_layers=30):
    """[(torchvision index, layer)] of vgg19().features, truncated to the first `num_layers` layers."""
    layers, in_channels = [], 3
    for width in _VGG19_CFG:
        if width == 'M':
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(nn.Conv2d(in_channels, width, kernel_size=3, padding=1))
            layers.append(nn.ReLU(inplace=True))
            in_channels = width
    return list(enumerate(layers[:num_layers]))
