"""Configuration of SEV-Net (Yang, Yin, Zhou, Gu, CVPR 2021) and its baselines.

Travels with checkpoints for ``trust_remote_code``: only relative imports of sibling files.
"""

from __future__ import annotations

from transformers import PretrainedConfig

from .protocols import BP4D_AUS, DEFAULT_TEXT_ENCODER, DEFAULT_THRESHOLD, au_label, parse_au


class SEVNetConfig(PretrainedConfig):
    r"""Configuration for [`SEVNetModel`] and [`SEVNetForAUDetection`].

    Args:
        backbone (`str`, *optional*, defaults to `"resnet18"`):
            timm model name of the visual encoder. Its un-pooled feature map is V (7x7x512 for resnet18 at 224 px).
        backbone_output_stride (`int`, *optional*):
            Total stride of V: 8, 16 or 32 (timm's `output_stride`: the last stages are dilated instead of strided,
            same weights). `None` keeps the backbone's own (32 for resnet18: 7x7 at 224 px, the paper). 16 gives 6x6
            at 96 px, where 32 gives 3x3: nine locations are too few for 15 AUs to attend to different places.
        backbone_kwargs (`dict`, *optional*):
            More keyword arguments for `timm.create_model`, e.g. `{"zero_init_last": false}`: timm starts the last
            norm of each ResNet block at 0 (an identity block), torchvision's ResNet-18, which the paper's PyTorch code
            would have used, at 1. Measured on the synthetic set with Eq. 7's loss alone: with timm's zero start the AU
            embeddings collapse by step 25; with `zero_init_last=false` they stay apart for the first 60 steps but
            collapse during the demo's second epoch (steps 163-324) for four epochs, so it delays the collapse and does
            not prevent it (README). `None`: timm's defaults.
        backbone_feature_stage (`int`, *optional*):
            Which stage of the backbone gives V: an index into timm's `feature_info` (negative counts from the end);
            the later stages are dropped (timm's `prune_intermediate_layers`; pretrained weights of the kept stages
            load as before). `None` keeps the whole backbone (the paper: resnet18's last stage, 512 channels). 3 on
            resnet18 is `layer3`: 256 channels at stride 16, each location seeing less of the face.
            Measured on the synthetic set (random resnet18; README, Design choices): with `layer4` most AUs' maps sat
            on the map's edges, each cell's features seeing a third of the crop (attention mass in the AU's region
            1.19-2.13x a uniform map's over three seeds at 96 px, 0.90x at 128 px); with `layer3` at 128 px
            1.92-3.14x. The demo sets 3; the model's default stays `None`, not measured on real faces.
        visual_hidden_size (`int`, *optional*):
            Channels of V (d_v). Read from the backbone when the model is built; stored so checkpoints are explicit.
        image_size (`int`, *optional*, defaults to 224):
            Input crop size the model is trained for (the image processor resizes to 256 and center-crops to it).
        text_encoder_name_or_path (`str`, *optional*, defaults to `"sentence-transformers/bert-large-nli-mean-tokens"`):
            Hub id or local folder of the frozen Intra-AU encoder (any `AutoModel` checkpoint). Only used to (re)compute
            the AU text table; a trained checkpoint predicts without it. Configs saved before the rename call it
            `text_encoder` and load unchanged (transformers reserves `text_encoder` for a text sub-config: with a
            string there, `get_text_config()` returned the string).
        text_pooling (`str`, *optional*):
            `"mean"` (the paper), `"cls"` or `"max"`. `None` reads a sentence-transformers checkpoint's own pooling
            settings and falls back to `"mean"`.
        text_max_length (`int`, *optional*, defaults to 128):
            Token limit per AU description.
        text_hidden_size (`int`, *optional*, defaults to 1024):
            Width of the Intra-AU sentence vectors (1024 for BERT-Large, 384 for MiniLM).
        inter_au_hidden_size (`int`, *optional*, defaults to 768):
            Width of the Inter-AU transformer. The paper writes both "hidden size 1024, 6 heads" and "final AU
            embedding 768"; 1024 is not divisible by 6, so we read it as: project 1024 -> 768, run the encoder at 768
            with 6 heads (head size 128) and feed-forward width 1024, then project 768 -> d_v.
        inter_au_num_layers (`int`, *optional*, defaults to 2):
            Post-LN transformer encoder layers over the AU sentence vectors (Eq. 2-3).
        inter_au_num_heads (`int`, *optional*, defaults to 6):
            Attention heads of the Inter-AU encoder.
        inter_au_intermediate_size (`int`, *optional*, defaults to 1024):
            Feed-forward width of the Inter-AU encoder.
        inter_au_dropout (`float`, *optional*, defaults to 0.1):
            Dropout inside the Inter-AU encoder.
        classifier_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the attended per-AU features before the classifier.
        shared_classifier (`bool`, *optional*, defaults to `True`):
            One linear classifier shared by all AUs (Eq. 7, as the paper); `False` gives each AU its own.
        classifier_per_au_bias (`bool`, *optional*, defaults to `False`):
            Give each AU its own bias on top of the shared classifier (N_AU extra scalars). Eq. 7 shares one classifier
            with one bias; AU base rates differ tenfold, which one bias cannot express, so the shared head first has to
            separate AUs through attention alone. Measured on the synthetic set: see the README.
        au_projection_bias_init (`float`, *optional*, defaults to 1.0):
            Initial value of every entry of the 768 -> d_v projection bias. Backbone features are non-negative (after
            a ReLU), so a positive offset starts every AU vector with a positive cosine to typical features and keeps
            Eq. 4's ReLU from zeroing whole maps at initialisation. 0 gives the plain initialisation.
        au_diversity_weight (`float`, *optional*, defaults to 1.0):
            Weight of a loss term added to Eq. 7 in training: the mean squared cosine between the projected AU
            embeddings w̄_k of different AUs ([`au_embedding_similarity`], 0 when orthogonal, 1 when parallel). Eq. 4-7
            are unchanged. Why: everything after the frozen AU table is shared by all AUs, and the early gradient is
            common to them (most labels are 0), so with Eq. 7's loss alone the AU embeddings collapse into one
            direction within 25-150 Adam steps (measured: pairwise cosine 1.000, identical maps, one logit per image
            for the shared classifier, test F1 0). With 1.0 they stay apart (cosine 0.04-0.15, map TV 0.55-0.65 on the
            demo recipe). 0 is the paper's loss alone (the strict-paper setting). Not used by the baselines.
        aus (`list[int]`, *optional*, defaults to the 12 BP4D AUs):
            AU numbers in output order; sets `id2label` (`AU1`, ...). Ignored when `id2label` is given.
        au_descriptions (`dict[str, str]`, *optional*):
            The description read by the Intra-AU encoder for each AU label. Filled by `from_backbones` /
            `set_au_descriptions` from `sevnet_hf/descriptions` when not given.
        zero_shot_aus (`list[str]`, *optional*):
            Labels of AUs added after training from their descriptions alone (`SEVNetForAUDetection.add_aus`); they
            come last in `id2label`. The trained AUs keep exactly the outputs they had: their Inter-AU embeddings,
            attention maps and logits are computed as if the added AUs were not there (the added AUs' own embeddings
            do attend to the trained ones).
        thresholds (`list[float]`, *optional*):
            Per-AU decision thresholds on the sigmoid probability; `None` means 0.5 for every AU (the field's rule).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialiser of linear layers.
    """

    model_type = "sevnet"
    # transformers' generic names for the Inter-AU transformer's sizes (read and written through to the fields).
    attribute_map = {
        "hidden_size": "inter_au_hidden_size",
        "num_hidden_layers": "inter_au_num_layers",
        "num_attention_heads": "inter_au_num_heads",
        "intermediate_size": "inter_au_intermediate_size",
    }

    def __init__(
        self,
        backbone: str = "resnet18",
        backbone_output_stride: int | None = None,
        backbone_kwargs: dict | None = None,
        backbone_feature_stage: int | None = None,
        visual_hidden_size: int | None = None,
        image_size: int = 224,
        text_encoder_name_or_path: str = DEFAULT_TEXT_ENCODER,
        text_pooling: str | None = None,
        text_max_length: int = 128,
        text_hidden_size: int = 1024,
        inter_au_hidden_size: int = 768,
        inter_au_num_layers: int = 2,
        inter_au_num_heads: int = 6,
        inter_au_intermediate_size: int = 1024,
        inter_au_dropout: float = 0.1,
        classifier_dropout: float = 0.0,
        shared_classifier: bool = True,
        classifier_per_au_bias: bool = False,
        au_projection_bias_init: float = 1.0,
        au_diversity_weight: float = 1.0,
        aus: list[int] | None = None,
        au_descriptions: dict[str, str] | None = None,
        thresholds: list[float] | None = None,
        initializer_range: float = 0.02,
        zero_shot_aus: list[str] | None = None,
        **kwargs,
    ):
        legacy_text_encoder = kwargs.pop("text_encoder", None)  # the field's name before the rename
        if isinstance(legacy_text_encoder, str):
            text_encoder_name_or_path = legacy_text_encoder
        if "id2label" not in kwargs or kwargs["id2label"] is None:
            numbers = [parse_au(a) for a in (aus if aus is not None else BP4D_AUS)]
            kwargs["id2label"] = {i: au_label(n) for i, n in enumerate(numbers)}
        kwargs.setdefault("problem_type", "multi_label_classification")
        super().__init__(**kwargs)
        self.backbone = backbone
        self.backbone_output_stride = backbone_output_stride
        self.backbone_kwargs = dict(backbone_kwargs) if backbone_kwargs else None
        self.backbone_feature_stage = backbone_feature_stage
        self.visual_hidden_size = visual_hidden_size
        self.image_size = image_size
        self.text_encoder_name_or_path = text_encoder_name_or_path
        self.text_pooling = text_pooling
        self.text_max_length = text_max_length
        self.text_hidden_size = text_hidden_size
        self.inter_au_hidden_size = inter_au_hidden_size
        self.inter_au_num_layers = inter_au_num_layers
        self.inter_au_num_heads = inter_au_num_heads
        self.inter_au_intermediate_size = inter_au_intermediate_size
        self.inter_au_dropout = inter_au_dropout
        self.classifier_dropout = classifier_dropout
        self.shared_classifier = shared_classifier
        self.classifier_per_au_bias = classifier_per_au_bias
        self.au_projection_bias_init = au_projection_bias_init
        self.au_diversity_weight = au_diversity_weight
        self.au_descriptions = dict(au_descriptions) if au_descriptions is not None else None
        self.thresholds = list(thresholds) if thresholds is not None else None
        self.initializer_range = initializer_range
        self.zero_shot_aus = list(zero_shot_aus) if zero_shot_aus else None
        self._validate()

    @property
    def aus(self) -> list[int]:
        """AU numbers in output order."""
        return [parse_au(self.id2label[i]) for i in range(len(self.id2label))]

    @property
    def num_trained_aus(self) -> int:
        """AUs the model was trained on: the first ones of ``id2label`` (the rest were added by ``add_aus``)."""
        return self.num_labels - len(self.zero_shot_aus or [])

    @property
    def au_labels(self) -> list[str]:
        """AU labels (``AU1`` ...) in output order."""
        return [self.id2label[i] for i in range(len(self.id2label))]

    @property
    def decision_thresholds(self) -> list[float]:
        """Per-AU thresholds, 0.5 where none were set."""
        return list(self.thresholds) if self.thresholds is not None else [DEFAULT_THRESHOLD] * self.num_labels

    def _validate(self) -> None:
        if self.num_labels < 1:
            raise ValueError("SEVNetConfig needs at least one AU: pass aus=[1, 2, ...] or id2label")
        labels = list(self.id2label.values())
        if len(set(labels)) != len(labels):
            raise ValueError(f"SEVNetConfig: AU labels must be unique, got {labels}")
        if self.inter_au_hidden_size % self.inter_au_num_heads != 0:
            raise ValueError(
                f"SEVNetConfig: inter_au_hidden_size ({self.inter_au_hidden_size}) must be divisible by "
                f"inter_au_num_heads ({self.inter_au_num_heads}); e.g. 768 with 6 heads"
            )
        for name in ("inter_au_num_layers", "inter_au_hidden_size", "inter_au_intermediate_size", "text_hidden_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"SEVNetConfig: {name} must be a positive integer, got {getattr(self, name)}")
        reserved = {"pretrained", "num_classes", "global_pool", "output_stride"} & set(self.backbone_kwargs or {})
        if reserved:
            raise ValueError(
                f"SEVNetConfig: backbone_kwargs may not set {sorted(reserved)} (the model sets them; the output "
                "stride is backbone_output_stride)"
            )
        if self.backbone_output_stride not in (None, 8, 16, 32):
            raise ValueError(
                f"SEVNetConfig: backbone_output_stride must be 8, 16, 32 or None, got {self.backbone_output_stride!r}"
            )
        if self.backbone_feature_stage is not None and (
            isinstance(self.backbone_feature_stage, bool) or not isinstance(self.backbone_feature_stage, int)
        ):
            raise ValueError(
                "SEVNetConfig: backbone_feature_stage must be an integer index into the backbone's feature stages or "
                f"None (the whole backbone), got {self.backbone_feature_stage!r}"
            )
        if not self.au_diversity_weight >= 0:
            raise ValueError(
                f"SEVNetConfig: au_diversity_weight must be >= 0 (0: the paper's loss alone), got {self.au_diversity_weight}"
            )
        if self.text_pooling not in (None, "mean", "cls", "max"):
            raise ValueError(
                f"SEVNetConfig: text_pooling must be 'mean', 'cls', 'max' or None, got {self.text_pooling!r}"
            )
        for name in ("inter_au_dropout", "classifier_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"SEVNetConfig: {name} must be in [0, 1), got {getattr(self, name)}")
        if self.thresholds is not None:
            if len(self.thresholds) != self.num_labels:
                raise ValueError(
                    f"SEVNetConfig: thresholds has {len(self.thresholds)} values for {self.num_labels} AUs; "
                    "give one per AU in id2label order or None"
                )
            if not all(0.0 < t < 1.0 for t in self.thresholds):
                raise ValueError(f"SEVNetConfig: thresholds must lie in (0, 1), got {self.thresholds}")
        if self.zero_shot_aus:
            tail = labels[len(labels) - len(self.zero_shot_aus) :]
            if tail != self.zero_shot_aus or len(self.zero_shot_aus) >= len(labels):
                raise ValueError(
                    f"SEVNetConfig: zero_shot_aus {self.zero_shot_aus} must be the last AUs of id2label ({labels}), "
                    "after at least one trained AU"
                )
        if self.au_descriptions is not None:
            missing = [label for label in labels if not str(self.au_descriptions.get(label, "")).strip()]
            if missing:
                raise ValueError(
                    f"SEVNetConfig: au_descriptions has no text for {', '.join(missing)}; add one per AU in id2label"
                )
