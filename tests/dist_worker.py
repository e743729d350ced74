"""Run by tests/test_training.py under `accelerate launch --num_processes 2 --cpu`: one training run per rank, then
each rank writes what it saw (world size, a hash of its final weights, how many test images it evaluated)."""

import json
import sys
from pathlib import Path

from sevnet_hf.training.args import TrainArguments
from sevnet_hf.training.loop import train

args = TrainArguments(**json.loads(Path(sys.argv[1]).read_text()))
results = train(args)
rank = results["process"]["index"]
summary = {
    "world_size": results["process"]["count"],
    "weights_sha256": results["weights_sha256"],
    "test_images_evaluated": results["test_images_evaluated"],
    "test_support": results["test"]["support"],
}
(Path(sys.argv[2]) / f"rank{rank}.json").write_text(json.dumps(summary))
