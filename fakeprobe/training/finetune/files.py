"""The files of a fine-tuning run: the model, its sidecar and the checkpoint folder that
lets a killed run resume."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from fakeprobe.core.checksums import sha256_file
from fakeprobe.core.provenance import MODEL_LIBRARIES, NETWORK_LIBRARIES, library_versions
from fakeprobe.extractor.backbones.finetuned import METADATA_NAME
from fakeprobe.fileio import atomic_path, interrupts_deferred, write_text
from fakeprobe.training.finetune.config import (RESUMABLE_FIELDS, STATE_FORMAT, FinetuneConfig,
                                                FinetuneError)

def checkpoint_dir(out_path: Path | str) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".ckpt")


def sidecar_path(out_path: Path | str) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".json")


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(plain(data), indent=2, allow_nan=True))


def plain(data: Any) -> Any:
    if isinstance(data, dict):
        return {str(k): plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [plain(v) for v in data]
    if isinstance(data, np.generic):
        return data.item()
    return data


def save_keras(model, path: Path, metadata: dict | None = None) -> None:
    """``model`` to ``path`` through a temporary file and a rename (``metadata`` added inside
    the archive as :data:`METADATA_NAME`)."""
    with atomic_path(path) as tmp:
        model.save(tmp)
        if metadata is not None:
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(METADATA_NAME, json.dumps(plain(metadata), indent=2))


def copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def run_versions() -> dict[str, str]:
    return library_versions({**MODEL_LIBRARIES, **NETWORK_LIBRARIES})


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} vs {b!r}")
    return out


def load_state(ckpt: Path, settings: dict, restart: bool) -> dict[str, Any] | None:
    """The state of an earlier run in ``ckpt`` (``None`` for a fresh start; ``restart`` clears
    it), or :class:`FinetuneError` when it was made with other ``settings``."""
    state_path = ckpt / "state.json"
    if restart and ckpt.exists():
        shutil.rmtree(ckpt)
    if not state_path.is_file():
        return None
    state = json.loads(state_path.read_text(encoding="utf-8"))
    if isinstance(state.get("settings", {}).get("config"), dict):
        # a setting added to fakeprobe after the checkpoint was written counts as its
        # default there (the run it resumes could not have set it)
        defaults = json.loads(json.dumps(plain(FinetuneConfig().to_dict())))
        state["settings"]["config"] = {
            **{k: v for k, v in defaults.items() if k not in RESUMABLE_FIELDS},
            **state["settings"]["config"]}
    if state.get("format") != STATE_FORMAT or state.get("settings") != settings:
        diff = differences(state.get("settings", {}), settings)
        raise FinetuneError(
            f"{ckpt} holds a run made with other settings ({'; '.join(diff) or 'format'}; "
            "checkpoint vs now): run with those settings to resume it, pass --restart to "
            "start over, or use another --out")
    return state


def save_epoch(ckpt: Path, out_path: Path, *, model: Any, best_copy: Any | None,
               metadata: dict, state: dict) -> None:
    """The files of a finished epoch, Ctrl-C held until they are written: the best model
    (``best_copy``, when the epoch improved), the last epoch (``model``, with its optimizer),
    ``state.json`` and the published model."""
    with interrupts_deferred():
        if best_copy is not None:
            save_keras(best_copy, ckpt / "best.keras", metadata)
        last = state["last"]
        save_keras(model, ckpt / last)
        write_json(ckpt / "state.json", state)
        for old in ckpt.glob("epoch-*.keras"):
            if old.name != last:
                old.unlink(missing_ok=True)
        publish(ckpt, out_path, state["epoch"], state["history"])


def publish(ckpt: Path, out_path: Path, epochs_run: int, history: list[dict]) -> None:
    """The best model of the checkpoint as ``out_path`` (and its sidecar)."""
    best = ckpt / "best.keras"
    if best.is_file():
        copy_atomic(best, out_path)
        with zipfile.ZipFile(out_path) as archive:
            meta = json.loads(archive.read(METADATA_NAME))
        meta["epochs_run"] = epochs_run
        meta["history"] = history
        write_json(sidecar_path(out_path), meta)


def clear_temporary(ckpt: Path) -> None:
    """Remove the temporary files an interrupted write left in ``ckpt``."""
    for tmp in ckpt.glob(".*.tmp*"):
        tmp.unlink(missing_ok=True)


def finish(ckpt: Path, out_path: Path, epochs_run: int, history: list[dict],
           monitor: str) -> None:
    """Make sure ``out_path`` is the checkpoint's best model (a run killed between its
    checkpoint and the copy left an older one), else :class:`FinetuneError`."""
    best = ckpt / "best.keras"
    if best.is_file() and (not out_path.is_file()
                           or sha256_file(out_path) != sha256_file(best)):
        publish(ckpt, out_path, epochs_run, history)
    if not out_path.is_file():
        raise FinetuneError(f"no epoch gave a finite validation {monitor}: nothing saved to "
                            f"{out_path}")
