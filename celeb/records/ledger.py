"""folder/wandb/: where a run's W&B record lives, and its ledger of finished segments."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from celeb import storage
from celeb.records.settings import RunInfo, loggable_config

WANDB_DIR = "wandb"
LEDGER_FILE = "ledger.json"
STAGING_DIR = ".staging"
SEGMENT_PREFIX = "offline-run-"


@dataclass
class Segment:
    """One finished offline run in folder/wandb/: the steps it holds and how it ended."""

    dir: str
    first_step: int
    last_step: int
    epochs: int
    state: str  # "finished" or "failed"
    uploaded: bool = False


@dataclass
class Ledger:
    """folder/wandb/ledger.json: the run's identity and its finished segments, oldest first.

    `final` is how the run ended ("finished" or "failed"), or None while it may go on.
    """

    info: RunInfo
    segments: list[Segment] = field(default_factory=list)
    final: str | None = None

    @property
    def last_step(self) -> int | None:
        return max((s.last_step for s in self.segments), default=None)

    def to_json(self) -> str:
        info = {**asdict(self.info), "config": loggable_config(self.info.config)}  # never a credential on disk
        return json.dumps({"info": info, "segments": [asdict(s) for s in self.segments],
                           "final": self.final}, indent=1)

    @classmethod
    def read(cls, folder: str | os.PathLike[str]) -> Ledger | None:
        text = storage.read_text(storage.join(folder, WANDB_DIR, LEDGER_FILE))
        if text is None:
            return None
        try:
            raw = json.loads(text)
            return cls(info=RunInfo.from_dict(raw["info"]), segments=[Segment(**s) for s in raw["segments"]],
                       final=raw.get("final"))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{storage.join(folder, WANDB_DIR, LEDGER_FILE)} is damaged ({error}); delete it and run "
                             f"`celeb wandb {folder} --rebuild` to write the run's W&B record again") from None

    def write(self, folder: str | os.PathLike[str]) -> None:
        storage.write_text(storage.join(folder, WANDB_DIR, LEDGER_FILE), self.to_json() + "\n")
