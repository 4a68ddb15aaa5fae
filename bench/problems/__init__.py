"""Problems the search benchmark (`bench.search`) runs raylm's search on: a space and a learning curve.

A problem is any object with these attributes (see `Problem`): its search space in the
study file's own form (`{"train.lr": {"loguniform": [1e-4, 1e-1]}, ...}`), its epoch
budget, and `evaluate(config, epoch)`, the validation metric (lower is better) a
configuration reaches after `epoch` epochs and the seconds that epoch costs. The
benchmark's trials report `evaluate` epoch by epoch through Tune as a face trial reports
its epochs, so raylm's searchers, schedulers and selection rule see what they would see.

To add a problem: write a class with these attributes (deterministic: the same config and
epoch give the same values, so searchers can be compared on equal terms), give it a
`source` saying where its numbers come from, and add it to `PROBLEMS`.
"""

from __future__ import annotations

from typing import Any, Protocol


class Problem(Protocol):
    name: str
    source: str  # where its numbers come from: a paper, a package, a recorded table
    space: dict[str, dict[str, list]]  # search.space's form: key -> {distribution: arguments}
    max_epochs: int

    def evaluate(self, config: dict[str, Any], epoch: int) -> tuple[float, float]:
        """(the validation metric after `epoch` epochs, 1-based; the seconds that epoch takes)."""
        ...
