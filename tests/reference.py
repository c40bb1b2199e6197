"""Independent float64 NumPy references.

Written from the formulas of the SGE paper and the authors' code.
"""

from __future__ import annotations

import numpy as np


def sge_reference(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    groups: int,
    epsilon: float = 1e-5,
    data_format: str = "channels_last",
    normalize: bool = True,
    return_gate: bool = False,
) -> np.ndarray:
    """SGE in float64, one group at a time, the way the formula reads.

    Returns `y` in the input's layout, or with `return_gate` the gate
    `a` of shape (N, H, W, G) whatever the layout.
    """
    x = np.asarray(x, np.float64)
    if data_format == "channels_first":
        x = np.transpose(x, (0, 2, 3, 1))
    n, h, w, c = x.shape
    per_group = c // groups
    y = np.empty_like(x)
    gate = np.empty((n, h, w, groups))
    for k in range(groups):
        xk = x[..., k * per_group : (k + 1) * per_group]  # (N, H, W, Cg)
        g = xk.mean(axis=(1, 2))  # (N, Cg)
        s = np.einsum("nhwc,nc->nhw", xk, g)
        if normalize:
            mu = s.mean(axis=(1, 2), keepdims=True)
            if h * w > 1:
                sigma = np.sqrt(((s - mu) ** 2).sum(axis=(1, 2), keepdims=True) / (h * w - 1))
                t = (s - mu) / (sigma + epsilon)
            else:
                t = np.zeros_like(s)
        else:
            t = s
        a = 1.0 / (1.0 + np.exp(-(gamma[k] * t + beta[k])))
        gate[..., k] = a
        y[..., k * per_group : (k + 1) * per_group] = xk * a[..., None]
    if return_gate:
        return gate
    if data_format == "channels_first":
        y = np.transpose(y, (0, 3, 1, 2))
    return y
