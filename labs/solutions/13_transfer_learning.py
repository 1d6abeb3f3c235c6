"""Reference answers for lab 13 (efficient blocks and transfer learning)."""

from torch import nn


class MySeparableBlock(nn.Module):
    """MobileNet v1's block: depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU."""

    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x):
        x = self.bn1(self.depthwise(x)).relu()
        return self.bn2(self.pointwise(x)).relu()


def my_separable_flops(n, c_in, c_out, h, w, k):
    """2 FLOPs per multiply-add; each output pixel of each image uses every weight once."""
    return 2 * n * h * w * (k * k * c_in + c_in * c_out)
