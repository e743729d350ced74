"""Model cards and Hub publishing (``sevnet-hf push MODEL_DIR --repo-id NAME``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

TEMPLATE_FILE = Path(__file__).with_name("model_card_template.md")
# The files a shareable model folder must hold (the weights may be sharded).
REQUIRED_FILES = ("config.json", "preprocessor_config.json")


def _results_table(results: dict | None) -> str:
    if not results or "test" not in results:
        return "No evaluation results were recorded for this checkpoint."
    test = results["test"]
    names = list(test["f1"])
    header = "| | " + " | ".join(names) + " | Avg |\n|---|" + "---|" * (len(names) + 1)
    rows = [
        f"| {results.get('model_type', 'sevnet')} (test F1 %) | "
        + " | ".join(f"{test['f1'][n]:.1f}" for n in names)
        + f" | **{test['f1_mean']:.1f}** |"
    ]
    for key, label in (("frequency_prior", "frequency prior"), ("all_present", "always present")):
        if key in results:
            scores = results[key]
            rows.append(
                f"| {label} | " + " | ".join(f"{scores['f1'][n]:.1f}" for n in names) + f" | {scores['f1_mean']:.1f} |"
            )
    return "\n".join([header, *rows])


def render_model_card(config, results: dict | None = None, repo_id: str = "PATH_OR_REPO_ID") -> str:
    """Fill the model card template from a model config and a results dict (``results.json`` of a training run)."""
    results = results or {}
    source = results.get("source")
    images = results.get("images", {})
    subjects = results.get("subjects", {})
    training = (
        f"Prepared `{source or '?'}` dataset (`{results.get('dataset', '?')}`): {images.get('train', '?')} training images from "
        f"{len(subjects.get('train', [])) or '?'} subjects, {images.get('validation', '?')} validation images from "
        f"{len(subjects.get('validation', [])) or '?'} held-out training subjects (early stopping), and "
        f"{images.get('test', '?')} test images from {len(subjects.get('test', [])) or '?'} unseen subjects."
        if results
        else "Not recorded."
    )
    protocol = (
        f"{results.get('fold_name', 'fold ?')}; subject-exclusive; occurrence = sigmoid >= 0.5; per-AU F1 with TP/FP/FN "
        f"accumulated over the whole test part, unknown labels ignored. Best epoch {results.get('best_epoch', '?')} of "
        f"{results.get('epochs_run', '?')} (validation mean F1 {results.get('validation_f1_mean', float('nan')):.1f})."
        if results
        else "Not recorded."
    )
    extra = ""
    if source == "synthetic":
        extra = (
            "- Trained on the synthetic AU faces of sevnet-hf (rendered cartoons), not on human-coded video: "
            "a pipeline check and demo model, not a detector for real faces."
        )
    dataset_ids = {"bp4d": "BP4D", "disfa": "DISFA", "bp4dplus": "BP4D+", "synthetic": "sevnet-hf-synthetic-au-faces"}
    values = {
        "title": f"{'SEV-Net' if config.model_type == 'sevnet' else config.model_type} AU detector "
        f"({config.backbone}, {len(config.au_labels)} AUs)",
        "backbone": config.backbone,
        "text_encoder": getattr(config, "text_encoder", "?"),
        "inter_layers": getattr(config, "inter_au_num_layers", 2),
        "model_type": config.model_type,
        "au_list": ", ".join(config.au_labels),
        "repo_id": repo_id,
        "training_data": training,
        "protocol": protocol,
        "results_table": _results_table(results),
        "extra_limitations": extra,
        "datasets_yaml": f"\n- {dataset_ids.get(str(source).lower(), str(source))}" if source else " []",
    }
    return Template(TEMPLATE_FILE.read_text(encoding="utf-8")).substitute(values)


def write_model_card(folder: str | os.PathLike, config, results: dict | None = None) -> Path:
    """Write ``README.md`` (the Hub model card) into a model folder atomically."""
    path = Path(folder) / "README.md"
    tmp = path.with_name(".README.md.tmp")
    tmp.write_text(render_model_card(config, results), encoding="utf-8")
    os.replace(tmp, path)
    return path


@dataclass
class PushArguments:
    model_dir: str = field(metadata={"help": "A folder written by training (save_pretrained + processor + card)."})
    repo_id: str = field(metadata={"help": "Hub repository, e.g. your-name/sevnet-bp4d-fold1."})
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})
    commit_message: str = field(default="Upload SEV-Net AU detector", metadata={"help": "Commit message."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: the logged-in one)."})


def check_model_folder(folder: Path) -> list[Path]:
    """The files to upload; raises ``FileNotFoundError`` naming what a shareable folder lacks."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; pass the model folder written by training")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not list(folder.glob("*.safetensors")):
        missing.append("*.safetensors (weights)")
    if not list(folder.glob("modeling_*.py")):
        missing.append("modeling_*.py (code for trust_remote_code)")
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}; save it with save_pretrained and the processor")
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def push(args: PushArguments) -> str:
    """Upload a model folder to the Hub in one commit. Changes nothing locally; offline, says so clearly."""
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(args.model_dir)
    files = check_model_folder(folder)
    operations = [CommitOperationAdd(path_in_repo=str(p.relative_to(folder)), path_or_fileobj=str(p)) for p in files]
    if not (folder / "README.md").is_file():  # fill a card in memory; the local folder stays as it is
        from transformers import AutoConfig

        card = render_model_card(AutoConfig.from_pretrained(folder, trust_remote_code=True), None, args.repo_id)
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))
    api = HfApi(token=args.token)
    try:
        api.create_repo(args.repo_id, private=args.private, exist_ok=True, repo_type="model")
        info = api.create_commit(args.repo_id, operations=operations, commit_message=args.commit_message)
    except Exception as err:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise ConnectionError(
            f"Could not upload {folder} to {args.repo_id}: {type(err).__name__}: {err}. "
            + ("HF_HUB_OFFLINE=1 is set; unset it and " if offline else "Check the network and ")
            + "log in with `huggingface-cli login` (or pass --token). Nothing was changed locally."
        ) from err
    return str(getattr(info, "commit_url", args.repo_id))


def main(argv: list[str] | None = None) -> int:
    import sys

    from .training.loop import parse_args

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and not argv[0].endswith((".json", ".yaml", ".yml")):
        argv = ["--model_dir", *argv]  # `sevnet-hf push MODEL_DIR --repo_id NAME`
    args = parse_args(argv, PushArguments)
    try:
        url = push(args)
    except (ConnectionError, FileNotFoundError) as err:
        print(f"sevnet-hf push: {err}")
        return 1
    print(f"Uploaded {args.model_dir} -> {url}")
    return 0
