"""What a training job tells ligerd's node view (``/metrics``, the dashboard, ``ligerctl top``).

Nothing here is needed: local ops are counted and reported on their own, and the fused linear
cross-entropy reports the tokens it saw, its loss, the time between its calls and the memory it
did not allocate (``ligerd._telemetry`` says how, without a GPU sync). A training loop can name its
job and report its own step numbers::

    import ligerd.telemetry
    ligerd.telemetry.set_job("llama-8b-sft")        # or LIGERD_JOB=...; default: the script's name
    ...
    ligerd.telemetry.report_step(tokens=batch_tokens, loss=loss_value, step_seconds=dt)

Without a daemon the reports are dropped (``stats()`` counts them) and training goes on.
``LIGERD_TELEMETRY=0`` turns reporting off."""

from __future__ import annotations

from typing import Optional

from ligerd import _telemetry
from ligerd._telemetry import job, set_job

__all__ = ["set_job", "job", "report_step", "flush", "stats"]


def report_step(tokens: Optional[int] = None, loss: Optional[float] = None,
                step_seconds: Optional[float] = None, peak_allocated_bytes: Optional[int] = None) -> None:
    """One training step's numbers (any subset). ``loss`` must already be a Python number: this
    never waits for the GPU."""
    rep = _telemetry.get()
    if rep is not None:
        rep.report_step(tokens=tokens, loss=loss, step_seconds=step_seconds,
                        peak_allocated_bytes=peak_allocated_bytes)


def flush(timeout: float = 2.0) -> bool:
    """Sends what is pending now; False when it had to be dropped (no daemon, no answer)."""
    rep = _telemetry.get()
    return rep.flush(timeout) if rep is not None else False


def stats() -> dict:
    """How reporting went: reports sent and dropped, and the last reason one was dropped."""
    rep = _telemetry.reporter
    if rep is None:
        return {"enabled": _telemetry._env_enabled(), "sent_reports": 0, "dropped_reports": 0, "last_error": None}
    return {"enabled": True, "job": rep.job, "sent_reports": rep.sent_reports,
            "dropped_reports": rep.dropped_reports, "last_error": rep.last_error}
