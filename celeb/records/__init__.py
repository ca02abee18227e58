"""W&B runs written from run folders: the one place this project talks to Weights & Biases.

A run's folder (celeb.training.runfolder) is its source of truth: the trial writes each epoch's row, panels
and tables there before it reports the epoch. The W&B record is derived from that folder, here,
in a process that outlives the trial (the sweep's driver, or `celeb train` itself), so whatever
ends a trial (its last epoch, ASHA, a NaN, a lost node) every epoch it finished reaches its run.

Records are written in *segments*. A segment is one offline W&B run (id = the trial's id) that
takes the folder's epochs from the last one recorded onwards, one `wandb.log` per epoch at W&B
step = the trainer's step (scalars, panels and tables of that epoch together). It is written in a
staging folder and, once finished, moved into folder/wandb/ and listed in folder/wandb/ledger.json.
So a segment is either complete and listed, or it is not there:

- a driver killed mid-segment leaves only staging, which the next writer deletes; the epochs it
  held are written again, from the folder, in the next segment;
- a resumed or retried trial continues the same run: its new segment starts after the last step
  listed, so `wandb sync` of all of a trial's segments gives each epoch exactly once;
- online and offline behave the same: records are always written offline first; in online mode
  each finished segment is then uploaded with `wandb sync` (from a background thread, after a
  quick check that W&B is reachable). When W&B is unreachable nothing waits on it: the segments
  stay on disk, listed as not uploaded, and `celeb wandb SWEEP_DIR --upload` sends them later.

Every wandb call is guarded: a W&B problem is one warning and a line in the report, never an
error of the trial or the sweep. The API key is only ever read by wandb itself from WANDB_API_KEY;
config keys that look like credentials are dropped before they are logged.

Modules: settings (modes, RunInfo, the credential filter), ledger (folder/wandb/ and its
ledger.json), writer (one folder's segments), upload (`wandb sync`), keeper (many folders, in
background threads), readback (reading records back, and the audit), rebuild (`celeb wandb`).
Importing any of them does not import wandb.
"""

from celeb.records.keeper import RecordKeeper, RecordReport
from celeb.records.ledger import LEDGER_FILE, SEGMENT_PREFIX, STAGING_DIR, WANDB_DIR, Ledger, Segment
from celeb.records.readback import Audit, Recorded, audit, offline_run_records, read_recorded
from celeb.records.rebuild import find_run_folders, run_id_of, run_info_of, write_records
from celeb.records.settings import WANDB_MODES, RunInfo, WandbWarning, loggable_config, resolve_wandb_mode
from celeb.records.writer import RecordWriter, discard_unlisted

__all__ = ["Audit", "LEDGER_FILE", "Ledger", "RecordKeeper", "RecordReport", "RecordWriter", "Recorded", "RunInfo",
           "SEGMENT_PREFIX", "STAGING_DIR", "Segment", "WANDB_DIR", "WANDB_MODES", "WandbWarning", "audit",
           "discard_unlisted", "find_run_folders", "loggable_config", "offline_run_records", "read_recorded",
           "resolve_wandb_mode", "run_id_of", "run_info_of", "write_records"]
