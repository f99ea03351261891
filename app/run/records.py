"""A run's VisualDL record files: one per run folder, each tag and step once.

VisualDL 2.5.3 shows one record file per run folder, the newest. So a resumed run does not
open a second file beside the first: :func:`carry_over_records` writes one new file with the
old file's points of the finished epochs, and removes the old one; anything added to a run
after it trained (Grad-CAM grids) goes through :func:`rewrite_records` the same way.
"""
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image
from visualdl import LogReader, LogWriter

from app.run.folder import RECORDS_PREFIX, RunFolder

# Scalar tags stepped per training step (global step); the others are stepped per epoch.
STEP_TAGS = ("train/loss", "train/acc")


def open_records(run_dir, keep_epochs: int, steps_per_epoch: int):
    """The VisualDL writer of a run that starts training after ``keep_epochs`` epochs: the
    records of those epochs carried over (:func:`carry_over_records`), or, from epoch 0, a
    new file whose name sorts after any old one, which is removed (a run killed before its
    first checkpoint left records of an epoch it trains again)."""
    if keep_epochs:
        return carry_over_records(run_dir, keep_epochs, steps_per_epoch)
    old = RunFolder(run_dir).record_files()
    writer = LogWriter(logdir=str(run_dir), file_name=_next_name(old))
    for path in old:
        path.unlink()
    return writer


def _next_name(old: list) -> str:
    """A record file name that sorts after every old one (VisualDL's own is
    vdlrecords.<seconds>.log, which a resume within the same second would reuse)."""
    stamps = [int(p.name.split(".")[1]) for p in old if p.name.split(".")[1].isdigit()]
    return f"{RECORDS_PREFIX}.{max([int(time.time())] + [t + 1 for t in stamps])}.log"


def carry_over_records(run_dir, keep_epochs: int, steps_per_epoch: int):
    """A new VisualDL writer for a resumed run, holding the run's records of its first
    ``keep_epochs`` epochs (each tag and step once); the older record files are removed.

    VisualDL 2.5.3 shows one record file per run folder, the newest: a resumed run that
    simply opened a second file would show only the epochs after the resume. The interrupted
    epoch's points are dropped here, so that every step appears once.
    """
    return rewrite_records(run_dir, lambda tag, step: step <= (
        keep_epochs * steps_per_epoch - 1 if tag in STEP_TAGS else keep_epochs))


def rewrite_records(run_dir, keep=lambda tag, step: True):
    """A new VisualDL writer for ``run_dir`` holding the records of its record files that
    ``keep(tag, step)`` accepts (each tag and step once, the latest); the old files are
    removed once the new one is written. Add to the writer, then close it: this is how
    anything is added to a run after it trained (VisualDL shows only the newest file)."""
    scalars, images, hparams = {}, {}, None
    old = RunFolder(run_dir).record_files()
    for path in old:
        reader = LogReader(file_path=str(path))
        tags = reader.get_tags()
        for tag in tags.get("scalar", []):
            for rec in reader.get_data("scalar", tag):
                if keep(tag, rec.id):
                    scalars[(tag, rec.id)] = (rec.value, rec.timestamp)
        for tag in tags.get("image", []):
            for rec in reader.get_data("image", tag):
                if keep(tag, rec.id):
                    images[(tag, rec.id)] = (rec.image.encoded_image_string, rec.timestamp)
        if tags.get("hyper_parameters") and hparams is None:
            hparams = reader.get_data("hyper_parameters", "hparam")[0].hparam
    writer = LogWriter(logdir=str(run_dir), file_name=_next_name(old))
    if hparams is not None:
        values = {h.name: getattr(h, h.WhichOneof("type")) for h in hparams.hparamInfos}
        writer.add_hparams(values, [m.name for m in hparams.metricInfos])
    for (tag, step), (value, walltime) in sorted(scalars.items(), key=lambda kv: kv[0][1]):
        writer.add_scalar(tag, value, step, walltime)
    for (tag, step), (png, walltime) in sorted(images.items(), key=lambda kv: kv[0][1]):
        writer.add_image(tag, np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), step,
                         walltime)
    writer.flush()
    for path in old:  # the new file holds everything kept; it sorts last, so it is the one shown
        if path.name != Path(writer.file_name).name:
            path.unlink()
    return writer
