"""Training and evaluation: Accelerate training (``loop.py``), model building (``build.py``), Trainer helpers
(``trainer_utils.py``), the cross-validation protocol (``crossval.py``) and the one-command demo (``demo.py``)."""
