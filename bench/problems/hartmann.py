"""The multi-fidelity Hartmann functions (Kandasamy et al., "Multi-fidelity Bayesian optimisation with continuous
approximations", ICML 2017), with the correlation presets mf-prior-bench publishes.

At fidelity z (1..100) the Hartmann function's weights are biased by `bias * (1 - t)` and a
half-normal noise of scale `noise * (1 - t)` is added, t = log z / log 100: at full fidelity
it is the exact 3-d or 6-d Hartmann function (minimum -3.86278 / -3.32237), below it a
biased, noisy approximation. The presets set how well low fidelities predict high ones:
`good` (bias 2.5, noise 2.0) and `bad` (3.5, 4.0). Evaluating at z costs
0.05 + 0.95 (z / 100)^2 (the paper's cost model), so a trial's epoch e of E reaches
z = 100 e / E and costs what the fidelity gained since the epoch before costs.

This is mf-prior-bench 1.10.0's formula (`mfpbench/synthetic/hartmann/generators.py`,
`benchmark.py`: matrices, presets, noise seeding, cost) in numpy, not the package: it pins
`numpy<2`, which raylm's pins exclude. tests/bench/test_problems.py checks it against
values that package printed.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

PRESETS = {"good": (2.5, 2.0), "moderate": (3.0, 3.0), "bad": (3.5, 4.0), "terrible": (4.0, 5.0)}  # (bias, noise)
ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
A = {
    3: np.array([[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]]),
    6: np.array(
        [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]
    ),
}
P = {
    3: 1e-4 * np.array([[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]]),
    6: 1e-4
    * np.array(
        [
            [1312, 1696, 5569, 124, 8283, 5886],
            [2329, 4135, 8307, 3736, 1004, 9991],
            [2348, 1451, 3522, 2883, 3047, 6650],
            [4047, 8828, 8732, 5743, 1091, 381],
        ]
    ),
}
Z_MAX = 100
SEED = 1337  # mf-prior-bench's noise seed when none is given
SECONDS = 100.0  # what a full-fidelity evaluation costs, in the benchmark's seconds


def value(x: tuple[float, ...], z: int, bias: float, noise: float, seed: int = SEED) -> float:
    """The function at `x` (each coordinate in [0, 1]) and fidelity `z`, as mf-prior-bench computes it (its noise
    drawn from `seed`: the package's own seed argument, 1337 when none is given)."""
    dim = len(x)
    t = math.log(z) / math.log(Z_MAX)
    weights = ALPHA - bias * (1 - t)
    exact = -float(np.sum(weights * np.exp(-np.sum(A[dim] * (np.asarray(x) - P[dim]) ** 2, axis=-1))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rng = np.random.default_rng(seed=abs(seed * z * hash(x)))  # a tuple of floats hashes the same in every run
    return exact + abs(rng.normal(size=1)[0]) * noise * (1 - t)


def cost(z: float) -> float:
    """What evaluating at fidelity `z` costs, over a full-fidelity evaluation (Kandasamy et al. 2017, p. 18)."""
    return 0.05 + 0.95 * (z / Z_MAX) ** 2


class Hartmann:
    def __init__(self, dim: int, preset: str, max_epochs: int = 10) -> None:
        self.name = f"hartmann{dim}-{preset}"
        self.source = f"Kandasamy et al. 2017, mf-prior-bench 1.10.0's mfh{dim}_{preset} preset"
        self.bias, self.noise = PRESETS[preset]
        self.space = {f"x{i}": {"uniform": [0.0, 1.0]} for i in range(dim)}
        self.max_epochs = max_epochs

    def fidelity(self, epoch: int) -> int:
        return max(1, round(Z_MAX * epoch / self.max_epochs))

    def evaluate(self, config: dict[str, Any], epoch: int) -> tuple[float, float]:
        x = tuple(float(config[f"x{i}"]) for i in range(len(self.space)))
        before = cost(self.fidelity(epoch - 1)) if epoch > 1 else 0.0
        return value(x, self.fidelity(epoch), self.bias, self.noise), SECONDS * (cost(self.fidelity(epoch)) - before)
