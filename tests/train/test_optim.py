import pytest
import torch

from raylm.config import TrainConfig
from raylm.train.optim import build_optimizer, build_schedule


def learning_rates(config: TrainConfig, steps_per_epoch: int) -> list[float]:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([parameter], config)
    schedule = build_schedule(optimizer, config, steps_per_epoch)
    rates = []
    for _ in range(config.epochs * steps_per_epoch):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_cosine_with_warmup():
    rates = learning_rates(TrainConfig(lr=1.0, epochs=3, schedule="cosine", warmup_epochs=1), steps_per_epoch=2)
    assert rates[:2] == pytest.approx([0.5, 1.0])  # linear warm-up over the first epoch
    assert rates[2:] == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466])  # cosine over the 4 remaining steps


def test_constant_and_onecycle():
    assert learning_rates(TrainConfig(lr=0.1, epochs=2, schedule="constant"), 3) == pytest.approx([0.1] * 6)
    onecycle = learning_rates(TrainConfig(lr=0.1, epochs=4, schedule="onecycle"), 5)
    assert max(onecycle) == pytest.approx(0.1) and onecycle[0] < 0.01 and onecycle[-1] < 0.01


@pytest.mark.parametrize(
    "name, kind", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_optimizers(name, kind):
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], TrainConfig(optimizer=name, weight_decay=0.01))
    assert isinstance(optimizer, kind) and optimizer.param_groups[0]["weight_decay"] == 0.01
