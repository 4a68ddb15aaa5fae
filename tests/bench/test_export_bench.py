"""bench/export.py end to end on one small model: its one JSON line, not its speeds."""

from __future__ import annotations

import json

import pytest

from bench.export import main


@pytest.mark.slow
def test_the_export_bench_prints_one_json_line_of_sizes_latencies_and_ratios(capsys):
    assert main(["--models", "mobilenetv2_100", "--runs", "1", "--threads", "1"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    record = json.loads(line)
    assert (record["name"], record["threads"], record["input_size"], record["channels"]) == ("export", 1, 128, 1)
    model = record["mobilenetv2_100"]
    assert 8 < model["size_mb"] < 12  # 2.2 M float32 parameters (8.9 MB) and the graph
    for batch in ("batch_1", "batch_32"):
        timing = model[batch]
        assert timing["onnxruntime_ms"] > 0 and timing["pytorch_ms"] > 0
        assert timing["ratio"] == pytest.approx(timing["pytorch_ms"] / timing["onnxruntime_ms"], rel=0.01)
    assert record["ratio"] == min(model["batch_1"]["ratio"], model["batch_32"]["ratio"])
