"""Plain-PyTorch SGE-ResNet and ResNet, as in the authors' PytorchInsight code.

A torchvision-style ResNet (v1.5: the stride is on the 3x3 convolution of the
bottleneck) with the official SGE module after the last BatchNorm of every
block. Module and parameter names are those of the authors' checkpoints
(`layer1.0.sge.weight`, `layer2.0.downsample.1.running_var`, `fc.bias`, ...).
This module depends on torch only; it does not use the Keras code, so it can
serve as an independent reference for it.

Example:

>>> from benchmarks import torch_resnet
>>> net = torch_resnet.sge_resnet50(num_classes=1000).eval()
>>> net(torch.zeros(1, 3, 224, 224)).shape
torch.Size([1, 1000])
"""

from __future__ import annotations

import torch
from torch import nn


class SpatialGroupEnhance(nn.Module):
    """The authors' SGE module, operating on NCHW tensors.

    Args:
        groups: Number of channel groups (64 in the paper).
    """

    def __init__(self, groups: int = 64):
        super().__init__()
        self.groups = groups
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, groups, 1, 1))
        self.sig = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.size()
        grouped = x.reshape(batch * self.groups, -1, height, width)
        # Similarity of each position to the group's mean feature.
        similarity = (grouped * self.avg_pool(grouped)).sum(dim=1, keepdim=True)
        scores = similarity.view(batch * self.groups, -1)
        scores = scores - scores.mean(dim=1, keepdim=True)
        scores = scores / (scores.std(dim=1, keepdim=True) + 1e-5)  # unbiased std
        scores = scores.view(batch, self.groups, height, width)
        scores = scores * self.weight + self.bias
        gate = self.sig(scores.view(batch * self.groups, 1, height, width))
        return (grouped * gate).reshape(batch, channels, height, width)


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions; SGE after bn2 when `attention`."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, attention=True):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        if attention:
            self.sge = SpatialGroupEnhance(64)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if hasattr(self, "sge"):
            out = self.sge(out)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1, 3x3 (strided), 1x1 convolutions; SGE after bn3 when `attention`."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, attention=True):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        if attention:
            self.sge = SpatialGroupEnhance(64)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if hasattr(self, "sge"):
            out = self.sge(out)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision-style ResNet; every block gets SGE when `attention`.

    Args:
        block: `BasicBlock` or `Bottleneck`.
        layers: Blocks per stage, e.g. `(3, 4, 6, 3)`.
        num_classes: Outputs of the `fc` classifier.
        attention: Whether the blocks carry SGE (the SGE-ResNet) or not (the
            baseline ResNet).
    """

    def __init__(self, block, layers, num_classes=1000, attention=True):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1, attention)
        self.layer2 = self._make_layer(block, 128, layers[1], 2, attention)
        self.layer3 = self._make_layer(block, 256, layers[2], 2, attention)
        self.layer4 = self._make_layer(block, 512, layers[3], 2, attention)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def _make_layer(self, block, planes, blocks, stride, attention):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, attention)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, attention=attention))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def sge_resnet18(num_classes: int = 1000) -> ResNet:
    """SGE-ResNet18 (basic blocks, SGE after bn2)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, attention=True)


def sge_resnet34(num_classes: int = 1000) -> ResNet:
    """SGE-ResNet34 (basic blocks, SGE after bn2)."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, attention=True)


def sge_resnet50(num_classes: int = 1000) -> ResNet:
    """SGE-ResNet50 of the paper (77.58% top-1 with the authors' weights)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, attention=True)


def sge_resnet101(num_classes: int = 1000) -> ResNet:
    """SGE-ResNet101 of the paper (78.80% top-1 with the authors' weights)."""
    return ResNet(Bottleneck, (3, 4, 23, 3), num_classes, attention=True)


def resnet18(num_classes: int = 1000) -> ResNet:
    """ResNet18 baseline (torchvision's architecture)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, attention=False)


def resnet34(num_classes: int = 1000) -> ResNet:
    """ResNet34 baseline (torchvision's architecture)."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, attention=False)


def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet50 baseline of the paper (torchvision's v1.5 architecture)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, attention=False)


def resnet101(num_classes: int = 1000) -> ResNet:
    """ResNet101 baseline of the paper (torchvision's v1.5 architecture)."""
    return ResNet(Bottleneck, (3, 4, 23, 3), num_classes, attention=False)


MODELS = {
    "sge_resnet18": sge_resnet18,
    "sge_resnet34": sge_resnet34,
    "sge_resnet50": sge_resnet50,
    "sge_resnet101": sge_resnet101,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
}
