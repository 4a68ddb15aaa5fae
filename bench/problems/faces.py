"""raylm's own faces, replayed: the learning curves `bench.record_faces` recorded of the face trainer.

Each recorded configuration of bench.search's face cell (learning rate, loss, batch size)
was trained to the full budget once; its every epoch's `val_real/nme` and wall time are in
`faces.json`, with the command and commit that recorded it. A proposed configuration is
answered by the recorded one with the same loss and batch size and the nearest learning
rate on a log scale (the lookup tabular benchmarks use), so a search pays what a real
trial of it would and sees the curve it would see.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

TABLE = Path(__file__).resolve().parent / "faces.json"
CONTINUOUS = "train.lr"  # the one continuous key of the recorded space (log scale); the rest are choices


class FaceReplay:
    name = "faces"

    def __init__(self, table: Path = TABLE) -> None:
        recorded = json.loads(table.read_text())
        self.source = f"{table.name}: {recorded['command']} at commit {recorded['commit']} ({recorded['recorded']})"
        self.space = recorded["space"]
        self.max_epochs = recorded["epochs"]
        self.trials = recorded["trials"]
        self.groups: dict[tuple, list[dict]] = {}
        for trial in self.trials:
            self.groups.setdefault(self.choices(trial["config"]), []).append(trial)

    def choices(self, config: dict[str, Any]) -> tuple:
        return tuple(config[key] for key in sorted(self.space) if key != CONTINUOUS)

    def recorded(self, config: dict[str, Any]) -> dict:
        """The recorded trial answering `config`: same choices, nearest learning rate (log scale)."""
        group = self.groups[self.choices(config)]
        wanted = math.log(config[CONTINUOUS])
        return min(group, key=lambda trial: abs(math.log(trial["config"][CONTINUOUS]) - wanted))

    def evaluate(self, config: dict[str, Any], epoch: int) -> tuple[float, float]:
        trial = self.recorded(config)
        return trial["metric"][epoch - 1], trial["seconds"][epoch - 1]
