"""The sweep's W&B records, kept by the driver: a Tune callback over celeb.records.RecordKeeper.

Trials never talk to W&B. Each trial writes its run folder (celeb.training.runfolder) before it reports an
epoch; this callback, in the driver, brings the trial's W&B run up to date from that folder after
each result, and finishes it when Tune completes the trial (its last epoch, an ASHA stop, early
stopping), fails it (after its retries) or ends the experiment (an interrupted sweep's runs are
closed without being marked over, and continue on `--resume`). A driver killed outright leaves
unfinished segments, which the next driver replaces (celeb.records). At the experiment's end the
keeper's report (what was written, what did not reach W&B's server) is saved as
<experiment>/wandb_report.json, for the driver to print.

Tune pickles its callbacks with the experiment (tuner.pkl), so the keeper and its threads are
made in `setup`, never pickled.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ray import tune
from ray.tune.experiment import Trial

from celeb import storage
from celeb.records import RecordKeeper, RecordReport, RunInfo, run_info_of
from celeb.training.runfolder import METRICS_FILE
from jobs.resume import orphan_folders
from celeb.sweep.spec import WandbSettings, trial_dirname

REPORT_FILE = "wandb_report.json"


class WandbRecords(tune.Callback):
    """One W&B run per trial (id = trial id, grouped by the sweep), written from the trial's folder."""

    def __init__(self, settings: WandbSettings, experiment_path: str, group: str, metric: str, mode: str) -> None:
        self.settings = settings
        self.experiment_path, self.group = experiment_path, group
        self.metric, self.mode = metric, mode
        self.keeper: RecordKeeper | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "keeper": None}

    def setup(self, **info: Any) -> None:
        self.keeper = RecordKeeper(self.settings.mode, upload_every_s=self.settings.upload_every_s).start()

    def orphans(self, trials: list[Trial]) -> list[str]:
        """Trial folders with epochs that none of Tune's trials owns and none adopted (an adopted
        orphan's epochs are in its adopter's record)."""
        return [f for f in orphan_folders(self.experiment_path, [t.trial_id for t in trials])
                if storage.exists(storage.join(f, METRICS_FILE))]

    def folder(self, trial: Trial) -> str:
        return storage.join(self.experiment_path, trial_dirname(trial.trial_id))

    def run_info(self, trial: Trial) -> RunInfo:
        s = self.settings
        return RunInfo(run_id=trial.trial_id, name=str(trial), group=self.group,
                       project=s.project, entity=s.entity, config=dict(trial.config or {}), tags=s.tags,
                       job_type=str((trial.config or {}).get("task", "")) or None, metric=self.metric,
                       mode=self.mode, log_checkpoint=s.log_checkpoint)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        self.keeper.update(self.folder(trial), self.run_info(trial))

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.keeper.close(self.folder(trial), self.run_info(trial), "finished")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.keeper.close(self.folder(trial), self.run_info(trial), "failed")

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        for trial in trials:
            over = trial.status in (Trial.TERMINATED, Trial.ERROR)
            state = "failed" if trial.status == Trial.ERROR else "finished"
            self.keeper.close(self.folder(trial), self.run_info(trial), state, final=over)
        for folder in self.orphans(trials):
            # A trial that started after Tune's last snapshot before a killed driver: Tune does not
            # know it any more, but what it finished is recorded (and its run closed) all the same.
            self.keeper.close(folder, run_info_of(folder, self.settings.project), "finished", final=False)
        report = self.keeper.drain()
        storage.write_text(storage.join(self.experiment_path, REPORT_FILE),
                           json.dumps(dataclasses.asdict(report), indent=1) + "\n")


def read_report(experiment_path: str) -> RecordReport | None:
    """The keeper's report of the sweep's last driver session (None before the first one ended)."""
    text = storage.read_text(storage.join(experiment_path, REPORT_FILE))
    return RecordReport(**json.loads(text)) if text else None
