"""Where training metrics go: JSONL always, TensorBoard and Weights & Biases on request.

Rank 0 calls `open_sinks(cfg, run_dir, resume_step, run_config)` once the resume step is
known, `write(record)` on every sink for each metrics record (`record["step"]` is the
optimizer step) and `close()` at the end. All three keep the same resume rule: history past
`resume_step` (written after the checkpoint the run resumed from) is dropped, so a resumed
run's curves continue from its checkpoint without a fold-back.

- JSONL: RUN/metrics.jsonl, one object per line, flushed per line (`MetricsLog`).
- TensorBoard: event files under RUN/tensorboard, one scalar per numeric key, flushed per
  record; `purge_step=resume_step + 1` hides the dropped steps.
- W&B: `wandb.init(dir=RUN)` in offline (default: RUN/wandb/offline-run-*, upload later with
  `wandb sync`) or online mode; the run id lives in RUN/wandb_run.json so a resumed run
  continues the same W&B run (`resume="allow"`).
"""

from __future__ import annotations

import importlib
import json
import secrets
import string
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol

from scifm.config import Config
from scifm.core.errors import ScifmError
from scifm.core.io import write_json
from scifm.train.metrics import MetricsLog

TRACK_EXTRA = "pip install 'scifm[track]'"
WANDB_RUN_FILE = "wandb_run.json"


class MetricsConfig(Config):
    """Metric sinks and the live progress line (`train.metrics`); JSONL is always written."""

    tensorboard: bool = False
    """Also write TensorBoard event files to RUN/tensorboard (needs scifm[track])."""
    wandb: bool = False
    """Also log to Weights & Biases under RUN/wandb (needs scifm[track])."""
    wandb_project: str = "scifm"
    """W&B project; the W&B run is named after the run directory."""
    wandb_mode: Literal["offline", "online"] = "offline"
    """offline: no network, upload later with `wandb sync RUN/wandb/offline-run-*`;
    online: stream to the W&B server (needs `wandb login` or WANDB_API_KEY)."""
    progress: bool = True
    """Show a live progress line on rank 0 (a plain line per log interval when stderr is not
    a terminal); SCIFM_PROGRESS=0 turns it off as well."""


class MetricSink(Protocol):
    """One destination of metric records."""

    def write(self, record: Mapping[str, Any]) -> None:
        """Record one metrics dict; `record["step"]` is the optimizer step."""

    def close(self) -> None:
        """Flush and release; called once, after the last write."""


def _require(module: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ScifmError(f"{what} needs the optional tracking packages: {TRACK_EXTRA}") from None


def _scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a record besides the step (bools and strings are skipped)."""
    return {
        key: float(value)
        for key, value in record.items()
        if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)
    }


class TensorBoardSink:
    """Scalars per key into RUN/tensorboard, hiding steps past the resume step."""

    def __init__(self, log_dir: Path, resume_step: int = 0) -> None:
        module = _require("torch.utils.tensorboard", "train.metrics.tensorboard")
        self.log_dir = log_dir
        self._writer = module.SummaryWriter(log_dir=str(log_dir), purge_step=resume_step + 1)

    def write(self, record: Mapping[str, Any]) -> None:
        step = int(record["step"])
        for key, value in _scalars(record).items():
            self._writer.add_scalar(key, value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _new_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits  # what W&B accepts in run ids
    return "".join(secrets.choice(alphabet) for _ in range(8))


def wandb_run_id(run_dir: Path) -> str:
    """The W&B run id of a run directory, created (and stored) on first use."""
    path = run_dir / WANDB_RUN_FILE
    if path.is_file():
        try:
            return str(json.loads(path.read_text(encoding="utf-8"))["id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ScifmError(
                f"{path}: unreadable W&B run id; delete the file to start a new W&B run"
            ) from None
    run_id = _new_run_id()
    write_json(path, {"id": run_id})
    return run_id


class WandbSink:
    """One W&B run per run directory, resumed under the same id when training resumes."""

    def __init__(self, run_dir: Path, project: str, mode: str, run_config: Mapping[str, Any]):
        wandb = _require("wandb", "train.metrics.wandb")
        self.run_id = wandb_run_id(run_dir)
        try:
            self._run = wandb.init(
                mode=mode,
                dir=str(run_dir),
                project=project,
                name=run_dir.resolve().name,
                id=self.run_id,
                resume="allow",
                config=dict(run_config),
                settings=wandb.Settings(console="off"),  # keep the live progress line intact
            )
        except wandb.errors.Error as err:
            hint = " (run `wandb login`, or set train.metrics.wandb_mode=offline)"
            extra = hint if mode == "online" else ""
            raise ScifmError(f"W&B could not start: {err}{extra}") from None

    @property
    def dir(self) -> Path:
        """This process's W&B run directory (RUN/wandb/offline-run-... in offline mode)."""
        return Path(self._run.dir).parent

    def write(self, record: Mapping[str, Any]) -> None:
        data = {key: value for key, value in record.items() if key != "step"}
        self._run.log(data, step=int(record["step"]))

    def close(self) -> None:
        self._run.finish()


def open_sinks(
    cfg: MetricsConfig, run_dir: Path, resume_step: int, run_config: Mapping[str, Any]
) -> list[MetricSink]:
    """The sinks `cfg` asks for, opened for rank 0 of a run resuming after `resume_step`.

    JSONL first and always; then TensorBoard and W&B when enabled. A missing package or a
    W&B start failure closes what was opened and raises one-line `ScifmError`.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    sinks: list[MetricSink] = [MetricsLog(run_dir / "metrics.jsonl", resume_step=resume_step)]
    try:
        if cfg.tensorboard:
            sinks.append(TensorBoardSink(run_dir / "tensorboard", resume_step))
        if cfg.wandb:
            sinks.append(WandbSink(run_dir, cfg.wandb_project, cfg.wandb_mode, run_config))
    except BaseException:
        close_sinks(sinks)
        raise
    return sinks


def write_sinks(sinks: Iterable[MetricSink], record: Mapping[str, Any]) -> None:
    """Send one record to every sink."""
    for sink in sinks:
        sink.write(record)


def close_sinks(sinks: Iterable[MetricSink]) -> None:
    """Close every sink, even when one fails to; the first failure is raised afterwards."""
    failure: BaseException | None = None
    for sink in sinks:
        try:
            sink.close()
        except Exception as err:  # the others still need closing
            failure = failure or err
    if failure is not None:
        raise failure
