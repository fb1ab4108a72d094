"""Convolutional stem for the image tower: MobileNetV2 blocks 0..12 (stride 16) + a 1x1 projection to the width.

``vision.stem = "mobilenetv2"`` replaces CLIP's 16 x 16 patch embedding (``visual.conv1``) with this module; the
rest of the tower (CLS token, positional embedding, blocks) is unchanged, because the stem's output grid at stride
16 has exactly the patch embedding's token count (8 x 8 at 128 px).

Layout follows the ImageNet MobileNetV2 1.0 release (Sandler et al., CVPR 2018; TensorFlow's Apache-2.0
``mobilenet_v2_1.0_224`` file as float32 safetensors, convs ``c0 .. c52`` in graph order, see
``load_mobilenet_v2_stem``): batch norm folded into each conv's bias, ReLU6 after every conv except the
projections, TensorFlow "SAME" padding (stride-2 3x3 convs pad 0 left/top, 1 right/bottom). Input is RGB in [-1, 1], which is why the
stem configs set ``mean = std = 0.5``.

    MobileNetV2Stem:  b 3 S S  ->  b 96 S/16 S/16
    ConvStem:         b 3 S S  ->  b (S/16 S/16) width    tokens for the transformer
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# (expansion, output channels, depthwise stride) of inverted-residual blocks 1..12 (block 0: no expansion)
_BLOCKS = ((6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1), (6, 32, 1), (6, 64, 2), (6, 64, 1), (6, 64, 1),
           (6, 64, 1), (6, 96, 1), (6, 96, 1), (6, 96, 1))
STEM_CHANNELS = 96
STEM_STRIDE = 16
NUM_CONVS = 39  # c0 .. c38 of the release file: the first conv, block 0 (2 convs), blocks 1..12 (3 convs each)


class _Conv(nn.Module):
    """Conv with bias (folded batch norm), TF SAME padding, optional ReLU6."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, groups=groups, bias=True)
        self.k, self.stride, self.act = k, stride, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.k > 1:
            # TF SAME for odd k: total padding k - 1 at stride 1; k - 2 (even input) at stride 2, extra on the end
            total = self.k - 1 if self.stride == 1 else self.k - 2
            lo = total // 2
            x = F.pad(x, (lo, total - lo, lo, total - lo))
        x = self.conv(x)
        return F.relu6(x) if self.act else x


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        layers = [] if expansion == 1 else [_Conv(cin, hidden, 1)]
        layers += [_Conv(hidden, hidden, 3, stride, groups=hidden), _Conv(hidden, cout, 1, act=False)]
        self.convs = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convs(x)
        return x + y if self.residual else y


class MobileNetV2Stem(nn.Module):
    """MobileNetV2 1.0 through block 12: b 3 S S -> b 96 S/16 S/16 (about 0.53 M parameters)."""

    def __init__(self):
        super().__init__()
        blocks: list[nn.Module] = [_Conv(3, 32, 3, 2), _InvertedResidual(32, 16, 1, 1)]
        cin = 16
        for expansion, cout, stride in _BLOCKS:
            blocks.append(_InvertedResidual(cin, cout, stride, expansion))
            cin = cout
        self.blocks = nn.Sequential(*blocks)

    def convs(self) -> list[nn.Conv2d]:
        """The convolutions in the release file's graph order (c0 .. c38)."""
        return [m.conv for m in self.modules() if isinstance(m, _Conv)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class ConvStem(nn.Module):
    """MobileNetV2 features + 1x1 projection to the transformer width; output b tokens width."""

    def __init__(self, width: int):
        super().__init__()
        self.features = MobileNetV2Stem()
        self.proj = nn.Conv2d(STEM_CHANNELS, width, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(x)).flatten(2).transpose(1, 2)  # b (g g) width


def stem_macs(image_size: int, width: int) -> int:
    """Multiply-adds of ``ConvStem`` on one image_size x image_size crop (convolutions and the projection)."""
    stem, size, macs = MobileNetV2Stem(), image_size, 0
    for mod in stem.modules():
        if isinstance(mod, _Conv):
            size = -(-size // mod.stride)  # SAME padding: ceil(size / stride)
            c = mod.conv
            macs += size * size * c.out_channels * (c.in_channels // c.groups) * c.kernel_size[0] * c.kernel_size[1]
    return macs + size * size * STEM_CHANNELS * width


@torch.no_grad()
def load_mobilenet_v2_stem(stem: MobileNetV2Stem, path: str | Path) -> int:
    """Load ``c0..c38`` of the ImageNet MobileNetV2 safetensors release into ``stem``; strict on names and shapes.

    Keys ``c39..c52`` (blocks 13..16 and the classifier) are expected in the file and ignored. Returns the number
    of tensors loaded. Raises ``ValueError`` naming the first missing or mis-shaped key.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MobileNetV2 weights not found: {path}")
    try:
        sd = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
    convs = stem.convs()
    assert len(convs) == NUM_CONVS
    n = 0
    for k, conv in enumerate(convs):
        for part in ("weight", "bias"):
            key = f"c{k}.{part}"
            if key not in sd:
                raise ValueError(f"{path}: missing {key}: not the MobileNetV2 1.0 release layout "
                                 "(c0 .. c52: each conv's weight, in torch's layout, and bias)")
            target = getattr(conv, part)
            if sd[key].shape != target.shape:
                raise ValueError(f"{path}: {key} has shape {tuple(sd[key].shape)}, the stem expects "
                                 f"{tuple(target.shape)}")
            target.copy_(sd[key].to(target.dtype))
            n += 1
    unknown = sorted(k for k in sd if not (k.startswith("c") and k.split(".")[0][1:].isdigit()))
    if unknown:
        raise ValueError(f"{path}: unexpected keys {unknown[:5]}: not the MobileNetV2 release layout")
    return n
