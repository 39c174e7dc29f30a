"""HiResCAM (Draelos & Carin 2020, "Use HiResCAM instead of Grad-CAM for faithful
explanations of convolutional neural networks", arXiv:2011.08891).

Grad-CAM averages each channel's gradient over the positions before multiplying;
HiResCAM multiplies elementwise, so each position keeps its own gradient:
  map = ReLU(sum_k dS/dA_k ⊙ A_k), divided by its max
For a model whose head is one Dense layer after flattening the feature map, this sum
is exactly the score's share of each position. The channel weights reported (for the
contributions) stay Grad-CAM's, the mean gradient.
"""

from __future__ import annotations

from .gradcam import GradCam


class HiResCam(GradCam):
    """HiResCAM for one model, layer and output, reusable across images and classes."""

    name = "hirescam"
    title = "HiResCAM"

    def channel_terms(self, features, gradients, weights):
        return gradients * features[:, None]
