"""The training doctor: the debugging flowchart of Karpathy's "A Recipe for Training Neural Networks" and the Deep
Learning Tuning Playbook, automated — data checks, the loss at init, overfitting a tiny batch, Smith's LR range
test over seeds, gradient and unit statistics, the learning curves, and an input-independent baseline — with one
ranked list of findings, each with its evidence and the recipe change that fixes it.

    diagnosis = descend.doctor.examine("examples/quickstart.toml", budget=120, out="runs/doctor")
    print(diagnosis.summary())
"""

from descend.doctor.examine import DEFAULT_BUDGET, examine
from descend.doctor.findings import Check, Diagnosis, Finding, Fix, rank
from descend.doctor.fix import apply as apply_fixes

__all__ = ["DEFAULT_BUDGET", "Check", "Diagnosis", "Finding", "Fix", "apply_fixes", "examine", "rank"]
