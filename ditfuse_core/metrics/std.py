"""SD: standard deviation of the fused image (contrast).

Why: VIFB calls it "Variance" but computes the population standard deviation √mean((F−μ)²);
that is the definition here (0–255 data, N in the denominator). Higher is better.
"""

from __future__ import annotations

import numpy as np


def standard_deviation(f: np.ndarray) -> float:
    """Population standard deviation of F (0–255). A constant image gives 0."""
    return float(np.sqrt(np.mean((f - f.mean()) ** 2)))
