"""sevnet-hf: SEV-Net facial action unit detection for the Hugging Face ecosystem.

Importing the package registers SEV-Net with the transformers auto classes (``AutoConfig``, ``AutoModel``,
``AutoModelForImageClassification``, ``AutoImageProcessor``) and for ``trust_remote_code`` saving.

Where things live:
- model: ``configuration_sevnet.py``, ``modeling_sevnet.py``, ``image_processing_sevnet.py`` (+ ``modeling_baselines.py``)
- data: ``data/`` (schema, alignment, folds, transforms) and ``datasets_scripts/`` (prepare bp4d|disfa|bp4dplus|...)
- training and evaluation: ``training/``, ``metrics/``
- inference: ``inference/``;  command line: ``cli.py`` (``sevnet-hf ...``)
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

from .au_descriptions import load_au_descriptions
from .configuration_baselines import AUMLGCNConfig, AUMSCAMConfig, AUResNetConfig
from .configuration_sevnet import DEFAULT_TEXT_ENCODER, SEVNetConfig
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
from .text_encoder import TextEncoder, encode_texts, load_text_encoder

__version__ = "0.1.0"


def _register() -> None:
    AutoConfig.register(SEVNetConfig.model_type, SEVNetConfig, exist_ok=True)
    AutoModel.register(SEVNetConfig, SEVNetForAUDetection, exist_ok=True)
    AutoModelForImageClassification.register(SEVNetConfig, SEVNetForAUDetection, exist_ok=True)
    try:
        AutoImageProcessor.register(SEVNetConfig, image_processor_classes={"pil": SEVNetImageProcessor}, exist_ok=True)
    except TypeError:  # transformers 4.x
        AutoImageProcessor.register(SEVNetConfig, slow_image_processor_class=SEVNetImageProcessor, exist_ok=True)
    SEVNetConfig.register_for_auto_class()
    SEVNetForAUDetection.register_for_auto_class("AutoModelForImageClassification")
    SEVNetImageProcessor.register_for_auto_class("AutoImageProcessor")
    for config_class, model_class in (
        (AUResNetConfig, AUResNetForAUDetection),
        (AUMLGCNConfig, AUMLGCNForAUDetection),
        (AUMSCAMConfig, AUMSCAMForAUDetection),
    ):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        AutoModelForImageClassification.register(config_class, model_class, exist_ok=True)
        config_class.register_for_auto_class()
        model_class.register_for_auto_class("AutoModelForImageClassification")


_register()

__all__ = [
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
