"""AU F1: per-AU F1 over a whole test part with unknown labels ignored (the FACS AU detection protocol)."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Per-action-unit F1 = 2TP / (2TP + FP + FN), with TP/FP/FN accumulated over every image of the test part, and the mean
over AUs ("Avg"), in percent. References are 1 (present), 0 (absent), or unknown (a negative value or 9), which is left
out of the counts. Predictions are 0/1 (threshold the sigmoid at 0.5, never tuned on the test part).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[int]]`): 0/1 per image and AU.
    references (`list[list[int]]`): 1/0 per image and AU, unknown as a negative value or 9.
    au_names (`list[str]`, optional): names of the AU columns, e.g. ["AU1", "AU2"].
Returns:
    f1_mean, precision_mean, recall_mean (floats, %), and f1_<AU>, precision_<AU>, recall_<AU> per AU.
"""

_CITATION = """
@inproceedings{yang2021sevnet, title={Exploiting Semantic Embedding and Visual Feature for Facial Action Unit
Detection}, author={Yang, Huiyuan and Yin, Lijun and Zhou, Yi and Gu, Jiuxiang}, booktitle={CVPR}, year={2021}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AUF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int32")),
                    "references": datasets.Sequence(datasets.Value("int32")),
                }
            ),
        )

    def _compute(self, predictions, references, au_names=None):
        from sevnet_hf.metrics import au_f1_scores

        scores = au_f1_scores(np.asarray(predictions), np.asarray(references), au_names)
        flat = {"f1_mean": scores["f1_mean"], "precision_mean": scores["precision_mean"], "recall_mean": scores["recall_mean"]}
        for key in ("f1", "precision", "recall"):
            flat.update({f"{key}_{name}": value for name, value in scores[key].items()})
        return flat
