"""How a training shows it is alive: a rich progress bar on a terminal, else one line every train.log_every steps.

    step 250/1000 (25%)  d_loss=1.234  g_loss=0.8765  512 img/s  ETA 2m30s
"""

from __future__ import annotations


def progress_line(step: int, total: int, metrics: dict[str, float], elapsed_s: float, trained: int) -> str:
    """'step 250/1000 (25%)  d_loss=1.234  g_loss=0.8765  512 img/s  ETA 2m30s': where a run is, how it does, how
    long it will take. The ETA extrapolates this run's average pace so far (samples and checkpoints included)."""
    remaining = total - step
    if remaining <= 0:
        when = f"done in {_duration(elapsed_s)}"
    else:
        when = f"ETA {_duration(remaining * elapsed_s / max(trained, 1))}"
    return (f"step {step}/{total} ({100 * step // total}%)  d_loss={metrics['d_loss']:.4g}  "
            f"g_loss={metrics['g_loss']:.4g}  {metrics['images_per_s']:.0f} img/s  {when}")


def _duration(seconds: float) -> str:
    """42s, 3m05s, 1h02m."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """A rich progress bar on a terminal (rank 0); none when stderr is not a TTY (CI, DVC, Prefect logs), where
    the trainer logs a progress line instead (`shown` says which)."""

    def __init__(self, enabled: bool, start: int, total: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        self.shown = enabled and console.is_terminal
        self.bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), TextColumn("{task.fields[losses]}"), console=console,
                            disable=not self.shown)
        self.task = self.bar.add_task("train", total=total, completed=start, losses="")

    def __enter__(self) -> Progress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def advance(self) -> None:
        self.bar.advance(self.task)

    def show_losses(self, metrics: dict[str, float]) -> None:
        self.bar.update(self.task, losses=f"d_loss {metrics['d_loss']:.3g}  g_loss {metrics['g_loss']:.3g}")
