"""Who a W&B run is and how it is written: the modes, the credential filter, `RunInfo`, the warning."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

WANDB_MODES = ("auto", "online", "offline", "disabled")
SECRET_WORDS = ("api_key", "apikey", "token", "password", "secret")


class WandbWarning(RuntimeWarning):
    """W&B failed; the run goes on without it (its folder keeps everything)."""


def resolve_wandb_mode(mode: str, environ: Mapping[str, str] = os.environ) -> str:
    """"online", "offline" or "disabled" for a `mode` of WANDB_MODES.

    "online", "offline" and "disabled" are returned as given. "auto" is "disabled" when
    WANDB_MODE=disabled, "offline" when WANDB_MODE is offline (or the older "dryrun"), "online" when
    WANDB_API_KEY holds a key, and "offline" otherwise (no key: record locally, upload later).
    """
    if mode not in WANDB_MODES:
        raise ValueError(f"W&B mode {mode!r} is not one of {', '.join(WANDB_MODES)}")
    if mode != "auto":
        return mode
    env_mode = environ.get("WANDB_MODE", "").strip().lower()
    if env_mode == "disabled":
        return "disabled"
    if env_mode in ("offline", "dryrun"):
        return "offline"
    return "online" if environ.get("WANDB_API_KEY", "").strip() else "offline"


def loggable_config(config: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """`config` as plain values, without any key that looks like a credential (its name contains
    one of SECRET_WORDS, in any case) and without any value that contains the WANDB_API_KEY.

    Nested dicts are filtered the same way. Dropping a harmless key such as "num_tokens" is the
    price of never logging a secret.
    """
    from celeb.training.checkpoint import plain

    key = environ.get("WANDB_API_KEY", "").strip()

    def keep(name: str, value: Any) -> bool:
        lowered = name.lower().replace("-", "_")
        if any(word in lowered for word in SECRET_WORDS):
            return False
        return not (key and isinstance(value, str) and key in value)

    def clean(mapping: Mapping[str, Any]) -> dict[str, Any]:
        return {str(k): clean(v) if isinstance(v, Mapping) else plain(v)
                for k, v in mapping.items() if keep(str(k), v)}

    return clean(config)


@dataclass(frozen=True)
class RunInfo:
    """Who a run is in W&B: its id (a sweep trial's id), name, group (the sweep), project and config,
    and the metric whose best epoch becomes the run's summary."""

    run_id: str
    name: str | None = None
    group: str | None = None
    project: str = "celeb"
    entity: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    job_type: str | None = None
    metric: str | None = None
    mode: str = "min"
    log_checkpoint: bool = False

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunInfo:
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "tags": tuple(known.get("tags") or ())})
