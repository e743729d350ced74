"""``sevnet-hf``: one command line for preparing data, training, evaluating, detecting and publishing.

    sevnet-hf demo                         the embedded-default main job (synthetic faces, train, test, detect)
    sevnet-hf prepare bp4d|disfa|bp4dplus|folder|synthetic ...
    sevnet-hf train ...                    (or: accelerate launch -m sevnet_hf.train ...)
    sevnet-hf crossval ...                 folds 1-3 and the paper-format table
    sevnet-hf ablate ...                   ResNet-18, ML-GCN, MS-CAM and SEV-Net on the same folds
    sevnet-hf zeroshot ...                 AUs held out of training, scored from their descriptions (+ controls)
    sevnet-hf detect INPUT... --model M    AUs in photos, folders and videos
    sevnet-hf push MODEL_DIR --repo_id ID  upload to the Hugging Face Hub

``sevnet-hf COMMAND --help`` lists each command's options. Every command also reads them from a JSON/YAML file whose
keys are the options' names, followed by flags that override it: ``sevnet-hf COMMAND ARGS.yaml [--option value ...]``.
"""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    "demo": "sevnet_hf.training.demo",
    "train": "sevnet_hf.training.loop",
    "crossval": "sevnet_hf.training.crossval",
    "ablate": "sevnet_hf.training.ablate",
    "zeroshot": "sevnet_hf.training.zeroshot",
    "detect": "sevnet_hf.inference.detect",
    "push": "sevnet_hf.hub",
}
PREPARERS = ("bp4d", "disfa", "bp4dplus", "folder", "synthetic")
# ``COMMAND --help`` where COMMAND's module imports torch at the top: the parser the command itself uses, built by a
# function in a light module (1.0 s instead of 8 s through loop.py or detect.py).
HELP_PARSERS = {
    "train": ("sevnet_hf.training.args", "train_parser"),
    "detect": ("sevnet_hf.inference.arguments", "detect_parser"),
}


def main(argv: list[str] | None = None) -> int:
    # Idle OpenMP threads sleep instead of spinning: on a machine shared with data workers or other jobs, spinning
    # threads took CPU from the work (measured: detection 4.1 -> 7.4 frames/s on 2 busy cores). Set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "prepare":
        if not rest or rest[0] not in PREPARERS:
            asked = bool(rest) and rest[0] in ("-h", "--help")
            print(
                f"usage: sevnet-hf prepare {{{'|'.join(PREPARERS)}}} ...  (sevnet-hf prepare NAME --help: its options)",
                file=sys.stdout if asked else sys.stderr,
            )
            return 0 if asked else 2
        module = f"sevnet_hf.datasets_scripts.{rest[0]}"
        rest = rest[1:]
    elif command in COMMANDS:
        module = COMMANDS[command]
        if command in HELP_PARSERS and ("-h" in rest or "--help" in rest):
            module_name, function_name = HELP_PARSERS[command]
            getattr(importlib.import_module(module_name), function_name)().print_help()
            return 0
    else:
        print(f"sevnet-hf: unknown command {command!r}; commands: prepare, {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return int(importlib.import_module(module).main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
