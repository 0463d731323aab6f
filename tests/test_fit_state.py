"""The fit's state has one owner: no module but the trainer's own touches its private attributes, the position
attributes are the FitState's, and a checkpoint carries the FitState across a stop exactly."""

from __future__ import annotations

import ast
import signal
from pathlib import Path

import pytest
import torch

import descend as ds
from descend.errors import DivergenceError, Interrupted
from descend.train import Trainer, checkpoint
from descend.train.callbacks import Callback
from descend.train.fit_state import SHOWN, FitState
from descend.train.state import Checkpoints

SOURCE = Path(ds.__file__).parent
TRAINER = SOURCE / "train" / "trainer.py"
TRAINER_LIKE = {"trainer", "t", "tr"}  # names the source gives a Trainer


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()


def _trainer(**options):
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 2))
    torch.manual_seed(0)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return Trainer(
        model,
        optimizer=ds.optim.create("momentum", lr=0.1, momentum=0.9),
        schedule="cosine",
        seed=3,
        deterministic=True,
        augment=lambda x, g: x + 0.01 * torch.randn(x.shape, generator=g),
        clip_grad_norm=1.0,
        **options,
    )


def _trainer_private_names() -> set[str]:
    """The Trainer's private attributes after a fit, and the private members of its classes."""
    trainer = _trainer()
    trainer.fit(_data(), epochs=1, batch_size=32, progress=False)
    names = {name for name in vars(trainer) if name.startswith("_")}
    for cls in type(trainer).__mro__:
        if cls.__module__.startswith("descend"):
            names |= {name for name in vars(cls) if name.startswith("_") and not name.startswith("__")}
    return names


def _receiver(node: ast.expr) -> str:
    return ast.unparse(node)


def _is_trainer_like(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in TRAINER_LIKE or "trainer" in node.id.lower()
    return isinstance(node, ast.Attribute) and node.attr in TRAINER_LIKE | {"_trainer"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_but_the_trainer_touches_a_private_trainer_attribute():
    private = _trainer_private_names()
    assert {"_handlers", "_event", "_loss_fn"} <= private  # the probe sees the trainer's own private names
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        if path == TRAINER:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(SOURCE)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Attribute) and _private(node.attr):
                own = (
                    isinstance(node.value, ast.Name)
                    and node.value.id in ("self", "cls")
                    or isinstance(node.value, ast.Call)
                    and ast.unparse(node.value.func) == "super"
                )
                if _is_trainer_like(node.value) or (node.attr in private and not own):
                    found.append(f"{where} {ast.unparse(node)}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
                and len(node.args) >= 2
                and _is_trainer_like(node.args[0])
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and _private(node.args[1].value)
            ):
                found.append(f"{where} {ast.unparse(node)}")
    assert not found, (
        "private trainer attributes touched outside train/trainer.py (use trainer.fit_state):\n" + "\n".join(found)
    )


def test_the_text_of_the_source_has_no_trainer_underscore():
    """The plain grep the architecture promises: ``trainer._`` appears in train/trainer.py only."""
    hits = [
        f"{path.relative_to(SOURCE)}:{i}"
        for path in sorted(SOURCE.rglob("*.py"))
        if path != TRAINER
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if "trainer._" in line
    ]
    assert not hits, hits


def test_the_position_attributes_are_the_fit_states():
    trainer = _trainer()
    assert not set(SHOWN) & set(vars(trainer))  # held once, by the FitState
    for i, name in enumerate(SHOWN):
        value = object() if name not in ("epoch", "global_step") else 100 + i
        setattr(trainer, name, value)
        assert getattr(trainer.fit_state, name) is value and getattr(trainer, name) is value
    assert type(Trainer.epoch).__name__ == "property" and Trainer.global_step.__doc__.startswith("``fit_state.")


class _StopAt(Callback):
    """At the end of global step ``step``: remember the FitState, then ask the loop to stop (as Ctrl-C does)."""

    def __init__(self, step):
        self.step, self.seen = step, None

    def on_batch_end(self, trainer):
        if trainer.global_step == self.step:
            self.seen = _snapshot(trainer.fit_state)
            trainer.stop_signal = signal.SIGINT


class _AtStart(Callback):
    def on_fit_start(self, trainer):
        self.seen = _snapshot(trainer.fit_state)


def _snapshot(fit: FitState) -> dict:
    sums = fit.sums.state_dict()
    return {
        "position": fit.position(),
        "ends": (fit.end_epoch, fit.total_steps),
        "base_lrs": list(fit.base_lrs),
        "rollbacks": fit.rollbacks,
        "history": [dict(logs) for logs in fit.history],
        "sums": {
            "metrics": sums["metrics"]["sums"].clone(),
            "penalty": sums["penalty"].clone(),
            "grad_norm": sums["grad_norm"].clone(),
        },
        "augment": fit.augment_rng.get_state().clone(),
    }


def test_a_checkpoint_carries_the_fit_state_across_a_stop(tmp_path):
    data, keeper = _data(), Checkpoints(tmp_path)
    stopper = _StopAt(step=3 * 2 + 2)  # inside the third epoch of three batches
    trainer = _trainer(callbacks=[stopper], checkpoints=keeper)
    with pytest.raises(Interrupted):
        trainer.fit(data, epochs=5, batch_size=32, progress=False)
    assert stopper.seen["position"] == {
        "epoch": 2,
        "batch_index": 2,
        "global_step": 8,
        "steps_per_epoch": 3,
        "stopped": False,
        "fit_start": [0, 0],
    }
    assert len(stopper.seen["history"]) == 2 and stopper.seen["sums"]["grad_norm"][1] == 2  # two clipped steps

    start = _AtStart()
    resumed = _trainer(callbacks=[start])
    resumed.fit(data, epochs=5, batch_size=32, progress=False, resume=keeper.last)
    seen, before = start.seen, stopper.seen
    assert seen["position"] == before["position"] and seen["ends"] == before["ends"] == (5, 15)
    assert seen["base_lrs"] == before["base_lrs"] and seen["rollbacks"] == before["rollbacks"]
    assert seen["history"] == before["history"]
    for key in ("metrics", "penalty", "grad_norm"):
        assert torch.equal(seen["sums"][key], before["sums"][key]), key
    assert torch.equal(seen["augment"], before["augment"])


class _DivergeAtEpochEnd(Callback):
    """Raises a divergence once, from on_epoch_end of the second epoch; afterwards records, at every step, the
    position a checkpoint would hold and where the trainer is."""

    def __init__(self):
        self.raised, self.positions = False, []

    def on_epoch_end(self, trainer, logs):
        if trainer.epoch == 1 and not self.raised:
            self.raised = True
            raise DivergenceError("a divergence noticed at an epoch's end")

    def on_batch_end(self, trainer):
        if self.raised:
            position = trainer.fit_state.position()
            self.positions.append((position["epoch"], position["batch_index"], trainer.epoch, trainer.batch_index))


def test_a_rollback_from_an_epoch_end_resumes_inside_the_epoch(tmp_path):
    """The epoch-end flag is the fit's state too: a rollback from on_epoch_end must not leave it set, or every
    checkpoint of the epoch run again would claim the next epoch."""
    diverge = _DivergeAtEpochEnd()
    trainer = _trainer(callbacks=[diverge], checkpoints=Checkpoints(tmp_path), on_divergence="rollback")
    with pytest.warns(RuntimeWarning, match="Rolled back"):
        trainer.fit(_data(), epochs=3, batch_size=32, progress=False)
    assert diverge.positions and all(p[:2] == p[2:] for p in diverge.positions), diverge.positions


class _ReloadMidFit(Callback):
    """Saves the trainer's state at global step 2 and loads it back at step 5 (as user code may, mid-fit)."""

    def __init__(self, path):
        self.path, self.loaded, self.bases = path, None, []

    def on_batch_end(self, trainer):
        if trainer.global_step == 2 and self.loaded is None:
            checkpoint.save(self.path, trainer.state_dict())
        elif trainer.global_step == 5 and self.loaded is None:
            self.loaded = checkpoint.load(self.path)
            trainer.load_state_dict(self.loaded)
        elif self.loaded is not None:
            self.bases.append(list(trainer.fit_state.base_lrs))


def test_a_state_loaded_mid_fit_keeps_its_base_rates(tmp_path):
    """A restored optimizer's rate is the schedule's at the saved step, not a change made by user code: the
    schedule goes on from the saved base rates."""
    reload = _ReloadMidFit(tmp_path / "state.safetensors")
    trainer = _trainer(callbacks=[reload])
    trainer.fit(_data(), epochs=3, batch_size=32, progress=False)
    assert reload.bases and all(bases == reload.loaded["base_lrs"] for bases in reload.bases), reload.bases
