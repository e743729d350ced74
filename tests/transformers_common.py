"""transformers' own common test mixins, fetched from the package registry at test time (not vendored).

The mixins (``ModelTesterMixin``, ``ConfigTester``, ``ImageProcessingTestMixin``, ``TrainingTesterMixin``) live in the
``tests/`` folder of the transformers source distribution (Apache-2.0, (c) The HuggingFace Team), which the wheel does
not ship. ``load()`` downloads the sdist of the *installed* transformers version with pip (the configured index, so a
local mirror works), extracts its top-level ``tests/*.py`` into a cache folder as the package ``transformers_tests``
and puts it on ``sys.path``. Nothing of it is committed here.

The sdist leaves out three sub-packages that ``test_modeling_common.py`` / ``test_configuration_common.py`` import.
They are replaced by the stand-ins written below, each for a stated reason:

- ``exporters/test_export.py`` (``ExportTesterMixin``, the ``torch.export`` tests): not in the sdist, so those tests do
  not run from here; ``tests/test_transformers_conformance.py`` exports SEV-Net with ``torch.export`` itself.
- ``generation/test_utils.py`` (``GenerationTesterMixin``): generation tests; these models do not generate.
- ``utils/fetch_hub_objects_for_ci.py`` (the repository's ``utils/``, not ``tests/``): ``url_to_local_path`` maps a
  test-fixture URL to a local copy in transformers' CI; the stand-in returns the URL (no test here loads one).
- ``utils/test_configuration_utils.py`` (``config_common_kwargs``): ``ConfigTester.check_config_arguments_init`` sets
  every argument of ``PretrainedConfig.__init__`` to a non-default value and checks the config keeps it. The stand-in
  builds that dict from the installed ``PretrainedConfig``'s signature instead of a hand-kept list.

Cache: ``$SEVNET_TRANSFORMERS_TESTS_CACHE`` or ``~/.cache/sevnet_hf/transformers_tests/<version>``. When the sdist
cannot be fetched, ``load()`` raises ``Unavailable`` with pip's reason and the tests are skipped with it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

PACKAGE = "transformers_tests"
MODULES = (
    "test_modeling_common.py",
    "test_configuration_common.py",
    "test_image_processing_common.py",
    "test_training_mixin.py",
)

_STAND_INS = {
    "exporters/test_export.py": '''"""Stand-in: tests/exporters is not in the transformers sdist (see sevnet tests/transformers_common.py)."""


class ExportTesterMixin:
    pass
''',
    "generation/test_utils.py": '''"""Stand-in: tests/generation is not in the transformers sdist; these models do not generate."""


class GenerationTesterMixin:
    pass
''',
    "utils/test_configuration_utils.py": '''"""Stand-in for tests/utils/test_configuration_utils.py (not in the transformers sdist).

``config_common_kwargs``: every argument of the installed ``PretrainedConfig.__init__`` set to a value that differs
from its default, built from the signature (``dtype`` is float16: ConfigTester checks it specially).
"""

import inspect

from transformers import PretrainedConfig


def _non_default(name, default):
    if name == "dtype":
        return "float16"
    if name in ("id2label", "label2id", "transformers_version", "architectures"):
        return None  # set by the config itself / bookkeeping
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 3
    if isinstance(default, float):
        return default + 0.5
    if name == "problem_type":
        return "regression"
    return None


config_common_kwargs = {}
for _name, _parameter in inspect.signature(PretrainedConfig.__init__).parameters.items():
    if _parameter.default is inspect.Parameter.empty:
        continue
    _value = _non_default(_name, _parameter.default)
    if _value is not None:
        config_common_kwargs[_name] = _value
''',
}


# Outside the package: test_image_processing_common.py puts ``<cache>/utils`` on sys.path for this module.
_ROOT_STAND_INS = {
    "utils/fetch_hub_objects_for_ci.py": '''"""Stand-in: the transformers repository's utils/ is not in its sdist."""


def url_to_local_path(url, return_url_if_not_found=True):
    return url
''',
}


class Unavailable(RuntimeError):
    """The transformers test sources could not be fetched (the reason is the message)."""


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "sevnet_hf" / "transformers_tests" / transformers.__version__
    return Path(os.environ.get("SEVNET_TRANSFORMERS_TESTS_CACHE", default))


def _download_sdist(workdir: Path) -> Path:
    version = transformers.__version__
    command = [sys.executable, "-m", "pip", "download", f"transformers=={version}", "--no-binary", ":all:"]
    command += ["--no-deps", "--no-build-isolation", "-q", "-d", str(workdir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    archives = sorted(workdir.glob("transformers-*.tar.gz"))
    if done.returncode != 0 or not archives:
        reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no archive"]
        raise Unavailable(f"could not fetch the transformers {version} sdist with pip: {reason[0]}")
    return archives[0]


def _extract(archive: Path, target: Path) -> None:
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if len(parts) == 3 and parts[1] == "tests" and parts[2] in MODULES and member.isfile():
                source = tar.extractfile(member)
                (target / parts[2]).write_bytes(source.read())
    missing = [name for name in MODULES if not (target / name).is_file()]
    if missing:
        raise Unavailable(f"{archive.name} has no tests/{', tests/'.join(missing)}")


def load() -> Path:
    """Make ``transformers_tests`` importable (fetching it once); returns its folder."""
    root = cache_dir()
    package = root / PACKAGE
    if not all((package / name).is_file() for name in MODULES):
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root) as work:
            work = Path(work)
            staged = work / PACKAGE
            staged.mkdir()
            _extract(_download_sdist(work), staged)
            (staged / "__init__.py").write_text("")
            for relative, text in _STAND_INS.items():
                path = staged / relative
                path.parent.mkdir(exist_ok=True)
                (path.parent / "__init__.py").touch()
                path.write_text(text)
            if package.exists():
                shutil.rmtree(package)
            staged.rename(package)  # whole package or nothing: an interrupted fetch leaves no half folder
    for relative, text in _ROOT_STAND_INS.items():
        path = root / relative
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return package
