"""SEV-Net and the baselines in the transformers auto classes, registered when transformers loads those classes.

``import sevnet_hf`` used to register everything at once, and that import took seconds: importing even
``transformers.AutoConfig`` imports torch. Now ``import sevnet_hf`` only calls :func:`install`, which puts an import
hook on ``sys.meta_path``. Each row of :data:`REGISTRATIONS` is registered as soon as the transformers module of its
auto class has been imported (``from transformers import AutoModel`` imports ``modeling_auto``), so
``AutoConfig.for_model("sevnet")`` or ``AutoModel.from_pretrained(folder)`` work after ``import sevnet_hf`` as before,
and a process that never touches the auto classes never imports torch on their account. If transformers' auto
modules are already imported when ``sevnet_hf`` is, :func:`install` registers everything on the spot.

Our classes are imported by the hook only while none of ``sevnet_hf``'s own modules is half-imported (e.g.
``modeling_sevnet`` imports ``transformers.AutoModel`` part-way through): then the row waits for the end of that
module, when the hook runs again. A row that fails to register gives a warning, never a failed import.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

# What is registered. transformers' convention: ``AutoModel`` gives the bare model (SEVNetModel), the task class
# (``AutoModelForImageClassification``) the detection head; the baselines have no bare model, so no AutoModel row. Classes are named
# ``module.Class`` inside ``sevnet_hf`` so that a row can wait for its module without importing it.
#   auto class                        config class                               class the auto class resolves to
REGISTRATIONS: tuple[tuple[str, str, str], ...] = (
    ("AutoConfig", "configuration_sevnet.SEVNetConfig", "configuration_sevnet.SEVNetConfig"),
    ("AutoModel", "configuration_sevnet.SEVNetConfig", "modeling_sevnet.SEVNetModel"),
    ("AutoModelForImageClassification", "configuration_sevnet.SEVNetConfig", "modeling_sevnet.SEVNetForAUDetection"),
    ("AutoImageProcessor", "configuration_sevnet.SEVNetConfig", "image_processing_sevnet.SEVNetImageProcessor"),
    ("AutoConfig", "configuration_baselines.AUResNetConfig", "configuration_baselines.AUResNetConfig"),
    ("AutoModelForImageClassification", "configuration_baselines.AUResNetConfig", "modeling_baselines.AUResNetForAUDetection"),
    ("AutoConfig", "configuration_baselines.AUMLGCNConfig", "configuration_baselines.AUMLGCNConfig"),
    ("AutoModelForImageClassification", "configuration_baselines.AUMLGCNConfig", "modeling_baselines.AUMLGCNForAUDetection"),
    ("AutoConfig", "configuration_baselines.AUMSCAMConfig", "configuration_baselines.AUMSCAMConfig"),
    ("AutoModelForImageClassification", "configuration_baselines.AUMSCAMConfig", "modeling_baselines.AUMSCAMForAUDetection"),
)  # fmt: skip

# ``register_for_auto_class``: ``save_pretrained`` writes these into the folder's ``auto_map`` and copies the code, so
# the folder loads with ``trust_remote_code=True`` where sevnet_hf is not installed. Done when the class is imported.
#   class                                          auto class named in the saved auto_map
SAVED_AUTO_MAP: tuple[tuple[str, str], ...] = (
    ("configuration_sevnet.SEVNetConfig", "AutoConfig"),
    ("modeling_sevnet.SEVNetModel", "AutoModel"),
    ("modeling_sevnet.SEVNetForAUDetection", "AutoModelForImageClassification"),
    ("image_processing_sevnet.SEVNetImageProcessor", "AutoImageProcessor"),
    ("configuration_baselines.AUResNetConfig", "AutoConfig"),
    ("modeling_baselines.AUResNetForAUDetection", "AutoModelForImageClassification"),
    ("configuration_baselines.AUMLGCNConfig", "AutoConfig"),
    ("modeling_baselines.AUMLGCNForAUDetection", "AutoModelForImageClassification"),
    ("configuration_baselines.AUMSCAMConfig", "AutoConfig"),
    ("modeling_baselines.AUMSCAMForAUDetection", "AutoModelForImageClassification"),
)  # fmt: skip

# The transformers module that defines each auto class; importing it is what triggers the rows above.
AUTO_MODULES: dict[str, str] = {
    "AutoConfig": "transformers.models.auto.configuration_auto",
    "AutoModel": "transformers.models.auto.modeling_auto",
    "AutoModelForImageClassification": "transformers.models.auto.modeling_auto",
    "AutoImageProcessor": "transformers.models.auto.image_processing_auto",
}

_PACKAGE = __name__.rpartition(".")[0]  # "sevnet_hf"
_WATCHED = frozenset(AUTO_MODULES.values())
_done: set[tuple[str, ...]] = set()  # rows of both tables already registered (or given up with a warning)
_executing: Counter[str] = Counter()  # sevnet_hf modules whose code is running now (any thread)
_finished: set[str] = set()  # watched modules whose code has run (importlib still marks them as initialising)
_lock = threading.Lock()
_again = False


def install() -> None:
    """Put the import hook on ``sys.meta_path`` (once) and register what transformers has already loaded."""
    if not any(isinstance(finder, _ImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _ImportHook())
    _sync()


class _ImportHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of transformers' auto modules and of sevnet_hf's modules so that
    :func:`_sync` runs right after each of them has executed."""

    def __init__(self) -> None:
        self._finding = threading.local()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _WATCHED and not fullname.startswith(_PACKAGE + "."):
            return None
        finding = self._finding.__dict__.setdefault("names", set())
        if fullname in finding:  # another finder asked the whole meta path again
            return None
        finding.add(fullname)
        try:
            spec = None
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None)
                if finder is not self and find is not None:
                    spec = find(fullname, path, target)
                    if spec is not None:
                        break
        finally:
            finding.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _NotifyingLoader(spec.loader, fullname)
        return spec


class _NotifyingLoader(importlib.abc.Loader):
    """Runs the real loader, then :func:`_sync`; everything else (``get_source``, resources...) goes to the real one."""

    def __init__(self, loader: Any, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        ours = self._name.startswith(_PACKAGE + ".")
        _finished.discard(self._name)  # imported again (after a del sys.modules[...])
        if ours:
            _executing[self._name] += 1
        try:
            self._loader.exec_module(module)
        finally:
            if ours:
                _executing[self._name] -= 1
                if _executing[self._name] <= 0:
                    del _executing[self._name]
        _finished.add(self._name)
        _sync()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


def _sync() -> None:
    """Register every row that is ready. Re-entrant and thread-safe: a call that finds another running leaves the
    work to it (that one loops again), so registration never waits on a lock while an import is half done."""
    global _again
    _again = True
    while _again and _lock.acquire(blocking=False):
        try:
            _again = False
            _register_ready()
        finally:
            _lock.release()


def _register_ready() -> None:
    for row in REGISTRATIONS:
        auto_class, config_path, target_path = row
        if row in _done or not _loaded(AUTO_MODULES[auto_class]):
            continue
        if _executing and not (_loaded(_module_of(config_path)) and _loaded(_module_of(target_path))):
            continue  # importing our classes now could meet a half-imported sevnet_hf module: wait for its end
        _attempt(row, _register, auto_class, config_path, target_path)
    for row in SAVED_AUTO_MAP:
        class_path, auto_class = row
        if row not in _done and _loaded(_module_of(class_path)):
            _attempt(row, _register_for_auto_class, class_path, auto_class)


def _register(auto_class_name: str, config_path: str, target_path: str) -> None:
    config_class, target = _resolve(config_path), _resolve(target_path)
    auto_class = getattr(sys.modules[AUTO_MODULES[auto_class_name]], auto_class_name)
    if auto_class_name == "AutoConfig":
        auto_class.register(config_class.model_type, config_class, exist_ok=True)
    elif auto_class_name == "AutoImageProcessor":
        try:
            # One torch implementation serves both of transformers' backends: registering it only as "pil" made every
            # load warn "Requested torchvision backend is not available" (the default request is torchvision).
            auto_class.register(config_class, image_processor_classes={"torchvision": target, "pil": target}, exist_ok=True)
        except TypeError:  # transformers 4.x
            auto_class.register(config_class, slow_image_processor_class=target, exist_ok=True)
    else:
        auto_class.register(config_class, target, exist_ok=True)


def _register_for_auto_class(class_path: str, auto_class_name: str) -> None:
    _resolve(class_path).register_for_auto_class(auto_class_name)


def _attempt(row: tuple[str, ...], register: Callable[..., None], *args: str) -> None:
    try:
        register(*args)
    except Exception as error:  # an import hook must not turn someone's import into a failure
        warnings.warn(
            f"sevnet_hf could not register {' / '.join(row)} with transformers ({type(error).__name__}: {error}); "
            "the auto classes will not know this class in this process.",
            stacklevel=2,
        )
    _done.add(row)


def _module_of(path: str) -> str:
    return f"{_PACKAGE}.{path.rpartition('.')[0]}"


def _resolve(path: str) -> Any:
    module_name, _, name = path.rpartition(".")
    return getattr(importlib.import_module(f"{_PACKAGE}.{module_name}"), name)


def _loaded(name: str) -> bool:
    """``name`` has been imported completely (importlib keeps ``_initializing`` set until the import returns)."""
    module = sys.modules.get(name)
    if module is None or name in _executing:
        return False
    return name in _finished or not getattr(getattr(module, "__spec__", None), "_initializing", False)
