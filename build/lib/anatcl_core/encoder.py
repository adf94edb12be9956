"""3D ResNet encoder and projection head, laid out exactly like the released AnatCL models.

The module tree (and therefore every `state_dict` key) mirrors the authors' checkpoints:
`encoder.conv1.weight`, `encoder.layer1.0.bn1.running_mean`, ..., `head.0.weight`, `head.2.weight`,
so a released file loads without renaming. Volumes are `[B, 1, X, Y, Z]` modulated gray-matter maps;
any spatial size works (the released weights saw 121 x 128 x 121 crops of the 1.5 mm CAT12 grid).

Under bf16 autocast the stem and the projection head compute in fp32 (`anatcl_core.precision`): the stem is
the one convolution fed raw intensities through a single input channel, and the head ends in the
normalisation every contrastive loss divides by.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from anatcl_core.precision import fp32_region


class BasicBlock(nn.Module):
    """Two 3x3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv3d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1x1 reduce, 3x3x3, 1x1x1 expand (x4), with a residual connection (ResNet-50)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv3d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


#: arch -> (block type, blocks per stage)
ARCHITECTURES: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def check_volume_batch(x: torch.Tensor) -> None:
    """Raise a clear error unless x is a floating [B, 1, X, Y, Z] tensor with B >= 1."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of shape [B, 1, X, Y, Z], got {type(x).__name__}")
    if x.ndim != 5 or x.shape[1] != 1 or x.shape[0] == 0:
        hint = " (add the channel axis: x[:, None])" if x.ndim == 4 else ""
        raise ValueError(f"expected a volume batch of shape [B, 1, X, Y, Z], got {list(x.shape)}{hint}")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point volume batch, got dtype {x.dtype}")
    if min(x.shape[2:]) < 8:
        raise ValueError(f"volume {list(x.shape[2:])} is too small for five stride-2 stages (need >= 8 voxels per axis)")


class ResNet3d(nn.Module):
    """3D ResNet: 7x7x7 stride-2 stem, max-pool, four stages, global average pool.

    `width` is the stem's channel count; the stages have width x (1, 2, 4, 8) planes. The paper's ResNet-18
    (and every released checkpoint) has width 64: 64-128-256-512. A narrower one (width 16 has ~1/14 of the
    FLOPs) is this project's CPU-sized departure, used by the default book.
    forward: x [B, 1, X, Y, Z] -> features [B, 8 * width * block.expansion].
    """

    def __init__(self, arch: str = "resnet18", width: int = 64):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCHITECTURES)}")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int (64 for the paper's ResNet), got {width!r}")
        block, depths = ARCHITECTURES[arch]
        self.arch, self.width = arch, width
        self.conv1 = nn.Conv3d(1, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        in_planes = width
        for index, (planes, depth) in enumerate(zip((width, 2 * width, 4 * width, 8 * width), depths), start=1):
            stride = 1 if index == 1 else 2
            layer, in_planes = self._make_stage(block, in_planes, planes, depth, stride)
            setattr(self, f"layer{index}", layer)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.out_features = in_planes
        self._init_weights()

    @staticmethod
    def _make_stage(block, in_planes: int, planes: int, depth: int, stride: int) -> tuple[nn.Sequential, int]:
        out_planes = planes * block.expansion
        downsample = None
        if stride != 1 or in_planes != out_planes:
            downsample = nn.Sequential(nn.Conv3d(in_planes, out_planes, 1, stride=stride, bias=False),
                                       nn.BatchNorm3d(out_planes))
        blocks = [block(in_planes, planes, stride, downsample)]
        blocks += [block(out_planes, planes) for _ in range(depth - 1)]
        return nn.Sequential(*blocks), out_planes

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with fp32_region(x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x.float()))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


class AnatCLModel(nn.Module):
    """Encoder plus MLP projection head (512 -> 512 -> feat_dim at width 64), as pretrained by AnatCL.

    model(x): x [B, 1, X, Y, Z] -> z [B, feat_dim] unit vectors (the contrastive space).
    model.embed(x): -> [B, 512] encoder features (what downstream probes use; the head is dropped);
    [B, 8 * width] for a narrower encoder.
    """

    def __init__(self, arch: str = "resnet18", feat_dim: int = 128, width: int = 64):
        super().__init__()
        self.arch = arch
        self.feat_dim = feat_dim
        self.width = width
        self.encoder = ResNet3d(arch, width)
        width = self.encoder.out_features
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, feat_dim))
        for m in self.head.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def embed_dim(self) -> int:
        return self.encoder.out_features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 1, X, Y, Z] -> encoder features [B, 512] (2048 for resnet50)."""
        check_volume_batch(x)
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 1, X, Y, Z] -> projections [B, feat_dim] float32, L2-normalised."""
        features = self.embed(x)
        with fp32_region(features):
            return F.normalize(self.head(features.float()), dim=1)
