"""sevnet-hf: SEV-Net facial action unit detection for the Hugging Face ecosystem.

SEV-Net and the baselines are known to the transformers auto classes (``AutoConfig``, ``AutoModel``,
``AutoModelForImageClassification``, ``AutoImageProcessor``) and save for ``trust_remote_code`` once this package is
imported. The import itself is light (no torch, no transformers): the names below load on first use, and
``registration.py`` registers the classes when transformers' auto classes are imported.

Where things live:
- model: ``configuration_sevnet.py``, ``modeling_sevnet.py``, ``image_processing_sevnet.py`` (+ ``modeling_baselines.py``)
- data: ``data/`` (schema, alignment, folds, transforms) and ``datasets_scripts/`` (prepare bp4d|disfa|bp4dplus|...)
- training and evaluation: ``training/``, ``metrics/``
- inference: ``inference/``;  command line: ``cli.py`` (``sevnet-hf ...``)
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from . import registration

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first access (PEP 562), as transformers' _LazyModule does.
_EXPORTS: dict[str, str] = {
    "DEFAULT_TEXT_ENCODER": "protocols",
    "AUDetectionOutput": "modeling_sevnet",
    "SEVNetConfig": "configuration_sevnet",
    "SEVNetForAUDetection": "modeling_sevnet",
    "SEVNetImageProcessor": "image_processing_sevnet",
    "SEVNetModel": "modeling_sevnet",
    "SEVNetModelOutput": "modeling_sevnet",
    "SEVNetPreTrainedModel": "modeling_sevnet",
    "TextEncoder": "text_encoder",
    "cross_modality_attention": "modeling_sevnet",
    "encode_texts": "text_encoder",
    "load_au_descriptions": "au_descriptions",
    "load_text_encoder": "text_encoder",
    "MODEL_TYPES": "modeling_baselines",
    "AUMLGCNConfig": "configuration_baselines",
    "AUMLGCNForAUDetection": "modeling_baselines",
    "AUMSCAMConfig": "configuration_baselines",
    "AUMSCAMForAUDetection": "modeling_baselines",
    "AUResNetConfig": "configuration_baselines",
    "AUResNetForAUDetection": "modeling_baselines",
}
__all__ = [  # the same names as _EXPORTS (tests/test_cli.py checks)
    "DEFAULT_TEXT_ENCODER",
    "AUDetectionOutput",
    "SEVNetConfig",
    "SEVNetForAUDetection",
    "SEVNetImageProcessor",
    "SEVNetModel",
    "SEVNetModelOutput",
    "SEVNetPreTrainedModel",
    "TextEncoder",
    "cross_modality_attention",
    "encode_texts",
    "load_au_descriptions",
    "load_text_encoder",
    "MODEL_TYPES",
    "AUMLGCNConfig",
    "AUMLGCNForAUDetection",
    "AUMSCAMConfig",
    "AUMSCAMForAUDetection",
    "AUResNetConfig",
    "AUResNetForAUDetection",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ below does these imports on demand
    from .au_descriptions import load_au_descriptions
    from .configuration_baselines import AUMLGCNConfig, AUMSCAMConfig, AUResNetConfig
    from .configuration_sevnet import SEVNetConfig
    from .image_processing_sevnet import SEVNetImageProcessor
    from .modeling_baselines import MODEL_TYPES, AUMLGCNForAUDetection, AUMSCAMForAUDetection, AUResNetForAUDetection
    from .modeling_sevnet import (
        AUDetectionOutput,
        SEVNetForAUDetection,
        SEVNetModel,
        SEVNetModelOutput,
        SEVNetPreTrainedModel,
        cross_modality_attention,
    )
    from .protocols import DEFAULT_TEXT_ENCODER
    from .text_encoder import TextEncoder, encode_texts, load_text_encoder


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access; ``sevnet_hf.<submodule>`` works without importing it first."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


registration.install()
