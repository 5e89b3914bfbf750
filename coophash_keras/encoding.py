"""Codes of a whole data set, streamed: `encode_rows` runs a model over an ImageSet's pipeline
(ImageSet.as_dataset(rows=True)) batch by batch and yields each batch's row indices and codes, so
that only codes are ever held, whatever the set's size. Every command that encodes a data set
(evaluate, index build / add, encode --out) reads it through here.

A batch of rows is encoded by `model.predict_on_batch`, the same step `model.encode` runs on each
batch of an in-memory array: the same rows in the same batches give the same codes bit for bit.
A file that cannot be decoded is named by the pipeline (one line) and left out; the count comes
in one line at the end, and a set without one readable image is an ImageFileError."""

import time

import numpy as np

from coophash_keras.codes import pack_codes, sign_codes

ENCODE_BATCH = 256  # model.encode's default batch size: the same batches as the in-memory path


class Progress:
    """The CLI's progress convention (--progress bar|epoch|none -> Keras verbosity 1|2|0) for a
    pass over images: a Keras Progbar with images/s and the ETA; verbosity 2 prints one line at the
    end. `done` images already encoded before this pass (a resumed build) count as done."""

    def __init__(self, total, verbose=0, done=0):
        import keras

        self.total, self.done, self.start, self.first = total, done, time.time(), done
        self.bar = keras.utils.Progbar(total, verbose=verbose, stateful_metrics=["images/s"]) if verbose else None
        if self.bar is not None and done:
            self.bar.update(done)

    def update(self, count):
        self.done += count
        if self.bar is not None:
            self.bar.update(self.done, values=[("images/s", self.rate())], finalize=self.done >= self.total)

    def rate(self):
        return (self.done - self.first) / max(time.time() - self.start, 1e-9)


def encode_rows(model, data, packed=True, batch_size=ENCODE_BATCH, start=0, stop=None, progress=None, report=True):
    """Yield (row indices int64 [n], codes [n, K] int8 or packed uint8 [n, K/8]) for each batch of
    rows [start, stop) of `data` (an ImageSet at the model's input shape), in row order; rows whose
    file cannot be decoded are left out. `progress`: a Progress to advance. `report`: print the
    count of skipped files at the end (one line, via data.warn)."""
    stop = len(data) if stop is None else stop
    if tuple(data.image_shape) != tuple(model.config.image_shape):
        raise ValueError(
            f"{data.name} has {'x'.join(map(str, data.image_shape))} images, the model takes "
            f"{'x'.join(map(str, model.config.image_shape))}"
        )
    part = data if (start, stop) == (0, len(data)) else data.subset(np.arange(start, stop))
    skipped = 0
    if len(part):
        for images, _, rows, ok in part.as_dataset(batch_size, rows=True):
            ok = ok.numpy()
            codes = sign_codes(np.asarray(model.predict_on_batch(images)))
            codes = pack_codes(codes) if packed else codes
            skipped += int(len(ok) - ok.sum())
            if progress is not None:
                progress.update(len(ok))
            yield rows.numpy()[ok] + start, codes[ok]
    if report and skipped:
        data.warn(f"{data.name}: skipped {skipped} of {stop - start} files that could not be decoded")


def encode_set(model, data, indices=None, packed=False, batch_size=ENCODE_BATCH, progress=None):
    """(codes, the row indices they belong to) of rows `indices` (default all) of `data`, streamed;
    undecodable files left out (named, counted). An ImageFileError if none can be decoded."""
    from coophash_keras.data.files import ImageFileError

    part = data if indices is None else data.subset(indices)
    rows, codes = [], []
    for r, c in encode_rows(model, part, packed, batch_size, progress=progress):
        rows.append(r)
        codes.append(c)
    if not rows or sum(len(r) for r in rows) == 0:
        raise ImageFileError(f"{data.name}: no readable images (every file failed to decode)")
    kept = np.concatenate(rows)
    if indices is not None:
        kept = np.asarray(indices, np.int64)[kept]
    return np.concatenate(codes), kept
