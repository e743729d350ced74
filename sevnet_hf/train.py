"""``accelerate launch -m sevnet_hf.train ...``: the training entry point (see ``training/loop.py``)."""

import sys

from .training.loop import main

if __name__ == "__main__":
    sys.exit(main())
