#!/usr/bin/env bash
# Here (with the package registries), before a device call: download the wheels the lent GPU machines lack into
# .whl/ (git-ignored; name it in the device call's `carry`). Their image has torch, timm, transformers, accelerate,
# pandas, pyarrow, opencv and tensorboard, but not `datasets` (prepared sets) and its dill / multiprocess.
# pyarrow comes too: datasets 5 needs pyarrow >= 24, and the image's version is not known here.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "datasets==5.2.0" "dill==0.4.1" "multiprocess==0.70.19" "pyarrow>=24"
ls -la .whl
