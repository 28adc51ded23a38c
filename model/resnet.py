"""ResNet-50 encoder (He et al., "Deep Residual Learning for Image Recognition", arXiv 1512.03385), as RVM uses it.

``layer4`` is dilated instead of strided, so the output stride is 16. Bottlenecks stride in their 3x3 conv
(the "v1.5" form torchvision ships). Names follow torchvision's ``resnet50`` (``conv1``, ``bn1``, ``layerN.M.convK``,
``downsample``) without ``fc``. Unlike the MobileNetV3 encoder, the input is NOT normalised inside.
"""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ResNet50Encoder", "Bottleneck"]


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ResNet50Encoder(nn.Module):
    """Returns features at strides 2, 4, 8, 16 with 64, 256, 512, 2048 channels."""

    channels = (64, 256, 512, 2048)
    # (blocks, width, stride, dilate) per layer; layer4 trades its stride for dilation 2.
    layer_specs = ((3, 64, 1, False), (4, 128, 2, False), (6, 256, 2, False), (3, 512, 2, True))

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self._in_ch = 64
        self._dilation = 1
        for index, (blocks, width, stride, dilate) in enumerate(self.layer_specs, start=1):
            setattr(self, f"layer{index}", self._make_layer(blocks, width, stride, dilate))
        del self._in_ch, self._dilation

    def _make_layer(self, blocks: int, width: int, stride: int, dilate: bool) -> nn.Sequential:
        first_dilation = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        out_ch = width * Bottleneck.expansion
        downsample = None
        if stride != 1 or self._in_ch != out_ch:
            downsample = nn.Sequential(nn.Conv2d(self._in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
        layers = [Bottleneck(self._in_ch, width, stride, first_dilation, downsample)]
        self._in_ch = out_ch
        layers += [Bottleneck(out_ch, width, dilation=self._dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        f1 = self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(f1)
        f2 = self.layer1(x)
        f3 = self.layer2(f2)
        f4 = self.layer4(self.layer3(f3))
        return [f1, f2, f3, f4]


