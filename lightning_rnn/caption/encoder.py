"""Image encoders: images ``[B, 3, H, W]`` in [0, 1] -> a feature vector ``[B, feature_size]``
and a grid of local features ``[B, grid * grid, width]`` (row-major regions) for attention.

- ``"small"`` (the default): a few conv-BN-ReLU-maxpool blocks written here; the last feature
  map is max-pooled to grid x grid regions, flattened into the vector so that *where* things
  are survives into it (a global pool would keep what is in the image but not whether it is
  above or left of something else);
- ``"resnet18"``: torchvision's ResNet-18 trunk, randomly initialised (weights are never
  downloaded), when torchvision is installed; it is not a dependency of this package.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

Encoder = Literal["small", "resnet18"]


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv -> batch norm -> ReLU -> 2x2 max pool: halves H and W."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True), nn.MaxPool2d(2))


def _grid(feature_map: Tensor, grid: int) -> Tensor:
    """``[B, C, h, w]`` -> ``[B, grid * grid, C]``, max-pooled over each of grid x grid regions
    (adaptive: any h, w), so that an object inside a region shows at full strength."""
    return nn.functional.adaptive_max_pool2d(feature_map, grid).flatten(2).transpose(1, 2)


class SmallCNN(nn.Module):
    """``[B, 3, H, W]`` -> (``[B, feature_size]``, ``[B, grid * grid, channels[-1]]``): ``len(channels)``
    conv blocks (each halves the side), a max pool to grid x grid regions, then for the vector a
    linear layer and ReLU over the flattened grid."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 64), feature_size: int = 256, grid: int = 4) -> None:
        super().__init__()
        widths = (3, *channels)
        self.blocks = nn.Sequential(*(conv_block(a, b) for a, b in zip(widths, widths[1:])))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * grid * grid, feature_size),
                                  nn.ReLU(inplace=True))
        self.grid, self.grid_size = grid, channels[-1]

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        grid = _grid(self.blocks(images * 2 - 1), self.grid)  # [0, 1] -> [-1, 1]
        return self.head(grid), grid


class ResNet18(nn.Module):
    """torchvision's ResNet-18 (random weights) without its classifier: the vector is its global
    average pool (which keeps little of the layout) through linear + ReLU to ``feature_size``,
    the grid its last feature map pooled to grid x grid regions (512 wide)."""

    def __init__(self, feature_size: int = 256, grid: int = 4) -> None:
        super().__init__()
        try:
            from torchvision.models import resnet18
        except ModuleNotFoundError:
            raise ValueError("encoder 'resnet18' needs torchvision, which is not installed "
                             "(pip install torchvision, or use encoder: small)") from None
        self.trunk = resnet18(weights=None)  # never downloads
        self.grid, self.grid_size = grid, self.trunk.fc.in_features
        self.trunk.fc = nn.Identity()  # unused: its parameters would only idle
        self.head = nn.Sequential(nn.Linear(self.grid_size, feature_size), nn.ReLU(inplace=True))
        self.register_buffer("mean", Tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", Tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        t = self.trunk
        x = t.maxpool(t.relu(t.bn1(t.conv1((images - self.mean) / self.std))))
        x = t.layer4(t.layer3(t.layer2(t.layer1(x))))
        return self.head(x.mean((2, 3))), _grid(x, self.grid)


def make_encoder(encoder: Encoder, channels: tuple[int, ...], feature_size: int, grid: int) -> nn.Module:
    if encoder == "small":
        return SmallCNN(channels, feature_size, grid)
    if encoder == "resnet18":
        return ResNet18(feature_size, grid)
    raise ValueError(f"encoder must be 'small' or 'resnet18', got {encoder!r}")
