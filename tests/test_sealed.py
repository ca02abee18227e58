"""Sealed folders (celeb.training.sealed): a checkpoint cut short is recognised, never resumed from, and the
run falls back to the previous complete one, naming both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from celeb.training import sealed


def checkpoint(root: Path, name: str, epoch: int, payload: bytes = b"x" * 100) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "state.pt").write_bytes(payload)
    (folder / "meta.json").write_text(json.dumps({"epoch": epoch}))
    sealed.seal(folder, {"epoch": epoch})
    return folder


def test_a_sealed_folder_checks_and_gives_its_meta(tmp_path):
    folder = checkpoint(tmp_path, "epoch_001", 1)
    assert sealed.check(folder) == {"epoch": 1}
    manifest = json.loads((folder / sealed.MANIFEST_FILE).read_text())
    assert sorted(manifest["files"]) == ["meta.json", "state.pt"] and manifest["files"]["state.pt"]["bytes"] == 100


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "state.pt").write_bytes(b"x" * 40), r"state\.pt has 40 bytes, its manifest says 100 \(cut short\)"),
    (lambda f: (f / "state.pt").write_bytes(b"y" * 100), r"state\.pt does not match its SHA-256"),
    (lambda f: (f / "meta.json").unlink(), r"meta\.json is missing"),
    (lambda f: (f / sealed.MANIFEST_FILE).unlink(), r"no manifest\.json \(the write stopped before"),
    (lambda f: (f / sealed.MANIFEST_FILE).write_text('{"files": {"state.pt"'), r"manifest\.json is unreadable"),
])
def test_a_folder_cut_short_or_damaged_is_incomplete_and_says_why(tmp_path, damage, message):
    folder = checkpoint(tmp_path, "epoch_001", 1)
    damage(folder)
    with pytest.raises(sealed.IncompleteFolderError, match=message):
        sealed.check(folder)


def test_the_newest_complete_checkpoint_wins_and_every_newer_torn_one_is_named(tmp_path):
    old = checkpoint(tmp_path, "checkpoint_000000", 1)
    good = checkpoint(tmp_path, "checkpoint_000001", 2)
    torn = checkpoint(tmp_path, "checkpoint_000002", 3)
    (torn / "state.pt").write_bytes(b"x" * 10)
    unsealed = tmp_path / "checkpoint_000003"  # killed before its manifest was written
    unsealed.mkdir()
    (unsealed / "state.pt").write_bytes(b"x")
    choice = sealed.newest_complete([old, torn, good, unsealed, good])
    assert (choice.path, choice.meta) == (str(good), {"epoch": 2})
    assert [path for path, _ in choice.rejected] == [str(unsealed), str(torn)]
    note = choice.describe()
    assert f"checkpoint {torn} is incomplete: state.pt has 10 bytes" in note
    assert f"falling back to the previous complete checkpoint {good} (epoch 2)" in note
    assert sealed.newest_complete([old, good]).describe() is None  # nothing passed over: nothing to say


def test_order_is_by_the_epoch_in_the_manifest_not_the_folder_name(tmp_path):
    # Tune reuses a checkpoint index after resuming from a checkpoint its snapshot did not know
    later = checkpoint(tmp_path, "checkpoint_000003", 6)
    earlier = checkpoint(tmp_path, "checkpoint_000004", 5)
    assert sealed.newest_complete([earlier, later]).path == str(later)


def test_when_no_checkpoint_is_complete_the_run_starts_over_and_says_so(tmp_path):
    torn = checkpoint(tmp_path, "epoch_002", 2)
    (torn / "state.pt").write_bytes(b"")
    choice = sealed.newest_complete([torn])
    assert choice.path is None and "starts from the beginning" in choice.describe()


def test_a_remote_candidate_is_checked_again_on_its_downloaded_copy(tmp_path):
    good = checkpoint(tmp_path / "remote", "checkpoint_000001", 2)
    fetched = []

    def fetch(path: str) -> str:
        fetched.append(path)
        copy = tmp_path / "local" / Path(path).name
        copy.mkdir(parents=True)
        for f in Path(path).iterdir():
            (copy / f.name).write_bytes(f.read_bytes())
        (copy / "state.pt").write_bytes(b"z" * 100)  # same size, other bytes: only the hash can tell
        return str(copy)

    choice = sealed.newest_complete([good], fetch=fetch)
    assert fetched == [str(good)] and choice.path is None and "SHA-256" in choice.describe()


def test_celeb_train_resume_falls_back_from_a_torn_checkpoint_to_the_previous_one(tmp_path, capsys):
    from celeb.training.local import resume_point

    previous = checkpoint(tmp_path / "checkpoints", "epoch_002", 2)
    torn = checkpoint(tmp_path / "checkpoints", "epoch_003", 3)
    later = checkpoint(tmp_path / "checkpoints", "epoch_004", 4)  # after the one asked for: not a candidate
    (torn / "state.pt").write_bytes(b"x")
    assert resume_point(torn) == previous
    out = capsys.readouterr().out
    assert f"checkpoint {torn} is incomplete" in out and f"previous complete checkpoint {previous}" in out
    assert resume_point(later) == later
    (previous / "state.pt").write_bytes(b"")
    with pytest.raises(sealed.IncompleteFolderError, match="without --resume"):
        resume_point(torn)
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        resume_point(tmp_path / "checkpoints" / "epoch_009")


def test_checkpoints_tune_deleted_get_placeholders_that_a_resume_passes_over(tmp_path):
    from jobs.resume import PRUNED_FILE, fill_pruned_checkpoints, remove_placeholders, tune_checkpoints

    trial = tmp_path / "trial_a"
    for index, epoch in ((2, 3), (3, 4)):  # Tune kept the last two; its snapshot may name checkpoint_000000
        checkpoint(trial, f"checkpoint_{index:06d}", epoch)
    (tmp_path / "trial_b").mkdir()  # no checkpoints: nothing to fill
    assert fill_pruned_checkpoints(str(tmp_path)) == 2
    assert sorted(p.name for p in trial.iterdir()) == [f"checkpoint_{i:06d}" for i in range(4)]
    assert (trial / "checkpoint_000000" / PRUNED_FILE).exists()
    assert [Path(p).name for p in tune_checkpoints(str(trial))] == ["checkpoint_000002", "checkpoint_000003"]
    assert fill_pruned_checkpoints(str(tmp_path)) == 0  # once is enough
    remove_placeholders(str(tmp_path))
    assert sorted(p.name for p in trial.iterdir()) == ["checkpoint_000002", "checkpoint_000003"]
