"""Callbacks: small objects that hang off the trainer's named events.

The trainer calls, in order: ``on_fit_start`` once, then per epoch ``on_epoch_start``, ``on_batch_end`` after every
optimizer step, ``on_epoch_end`` with the epoch's logged values, and ``on_fit_end`` once (also when a callback
stopped training early). A callback reads the trainer's public attributes (``model``, ``optimizer``, ``epoch``,
``global_step``, ``history``) and may set ``trainer.stop_training = True``; it never reaches into the loop's
locals. ``state_dict``/``load_state_dict`` hold everything a resumed run needs (tensors and JSON values only).
"""

from __future__ import annotations


class Callback:
    """Base class: every event is a no-op, every callback is stateless unless it says otherwise."""

    def on_fit_start(self, trainer) -> None:
        pass

    def on_epoch_start(self, trainer) -> None:
        pass

    def on_batch_end(self, trainer) -> None:
        pass

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        pass

    def on_fit_end(self, trainer) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
