"""The thesis's classification head: Flatten -> Dense 512 -> Dropout -> Dense 256 -> Dropout -> Dense 2."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def thesis_head(in_features: int, hidden: Sequence[int] = (512, 256), dropout: float = 0.5,
                num_classes: int = 2, extra_inputs: int = 0) -> nn.Sequential:
    """Dense layers with ReLU and dropout on a flat feature vector of ``in_features``; the output
    layer takes ``extra_inputs`` more inputs (covariates, late fusion; 0: the thesis's head).

    At 140x700 VGG16 gives 4x21x512 = 43008 features: 22,020,608 + 131,328 + 514 parameters.
    """
    layers: list[nn.Module] = []
    prev = in_features
    for h in hidden:
        layers += [nn.Linear(prev, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        prev = h
    layers.append(nn.Linear(prev + int(extra_inputs), num_classes))
    return nn.Sequential(*layers)
