"""Callbacks to watch, select and resume CoopHash training. They hold numpy arrays only, so
keras-tuner can deep-copy them for every trial."""

import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from coophash_keras.codes import sign_codes
from coophash_keras.metrics import retrieval_metrics
from coophash_keras.preprocessing import denormalize_images, normalize_images


class RetrievalMetricsCallback(keras.callbacks.Callback):
    """Every `every_n_epochs` (and at the last epoch), encode a query and a database set and put
    validation retrieval metrics into the epoch logs: `val_map` (mAP over the whole database) and
    `val_map@K`; other epochs carry no val_map. List it BEFORE TensorBoard / ModelCheckpoint / a
    tuner so they see the values (BestModelCheckpoint skips the epochs without one)."""

    def __init__(self, query_images, query_labels, database_images, database_labels, every_n_epochs=1, topk=(100,)):
        """The images: arrays, or ImageSets (file rows, streamed; their own labels are used)."""
        super().__init__()
        self.query_images, self.query_labels = _rows(query_images), np.asarray(query_labels)
        self.database_images, self.database_labels = _rows(database_images), np.asarray(database_labels)
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.topk = tuple(int(k) for k in topk)
        self.last = {}

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        last_epoch = self.params.get("epochs", epoch + 1) - 1 if self.params else epoch
        if (epoch + 1) % self.every_n_epochs and epoch != last_epoch:
            return  # no value on this epoch: a repeated old one would read as a new measurement
        q, q_labels = _encoded(self.model, self.query_images, self.query_labels)
        db, db_labels = _encoded(self.model, self.database_images, self.database_labels)
        res = retrieval_metrics(q, q_labels, db, db_labels, topk=self.topk, pr_curve=False)
        self.last = {"val_map": res["mAP@all"], **{f"val_map@{k}": res[f"mAP@{k}"] for k in self.topk}}
        logs.update(self.last)


def _rows(images):
    from coophash_keras.data.image_set import ImageSet

    return images if isinstance(images, ImageSet) else np.asarray(images)


def _encoded(model, images, labels):
    """(codes, labels) of an array, or of an ImageSet streamed (the rows that decode)."""
    if isinstance(images, np.ndarray):
        return model.encode(images), labels
    from coophash_keras.encoding import encode_set

    codes, rows = encode_set(model, images)
    return codes, images.labels[rows]


def image_grid(columns, min_tile=64, separator=2, separator_value=128):
    """uint8 image columns [n, H, W, C] (one list entry per column) -> one uint8 image
    [rows*H', cols*W', C]: each tile upscaled (nearest neighbour, an integer factor bringing its
    smaller side to at least `min_tile` pixels), tiles separated by `separator`-pixel grey lines."""
    columns = [np.asarray(c) for c in columns]
    n, h, w, ch = columns[0].shape
    f = max(1, -(-min_tile // min(h, w)))
    th, tw = h * f, w * f
    out = np.full(
        (n * th + (n - 1) * separator, len(columns) * tw + (len(columns) - 1) * separator, ch),
        separator_value,
        np.uint8,
    )
    for j, col in enumerate(columns):
        tiles = np.repeat(np.repeat(col, f, axis=1), f, axis=2)
        for i in range(n):
            top, left = i * (th + separator), j * (tw + separator)
            out[top : top + th, left : left + tw] = tiles[i]
    return out


class BestModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint(save_best_only=True) that waits quietly for the epochs that carry the
    monitored value (validation every N epochs), instead of warning on every other epoch."""

    def __init__(self, filepath, monitor="val_map", mode="max", **kwargs):
        super().__init__(filepath, monitor=monitor, mode=mode, save_best_only=True, **kwargs)

    def on_epoch_end(self, epoch, logs=None):
        if logs and self.monitor in logs:
            super().on_epoch_end(epoch, logs)


class HashingTensorBoard(keras.callbacks.Callback):
    """What Keras' TensorBoard callback cannot show, written eagerly at epoch end with its own
    writer (`<log_dir>/coophash`; tf.summary inside train_step is unreliable), for every model:
      scalars   bits/balance, bits/correlation (mean |off-diagonal| correlation of code bits)
      histogram hash/relaxed_codes
    for CoopHash also:
      images    pairs/generated_and_revised: per row x^+ | x~+ | x^- | x~- (labels in pairs/labels),
                upscaled with separators
      scalars   langevin/distance_after_step_t: RMS pixel distance ||x~_t - x^|| after t of the T
                Langevin steps, and langevin/energy_gain_after_step_t: mean f_E(x~_t) - f_E(x^)
    and at the end of training the embedding projector (codes of `projector_images`, label
    metadata, sprite) written into the log_dir root, where the projector plugin looks."""

    TAGS = (
        "bits/balance",
        "bits/correlation",
        "hash/relaxed_codes",
        "pairs/generated_and_revised",
        "pairs/labels",
        "langevin/distance_after_step_<t>",
        "langevin/energy_gain_after_step_<t>",
    )

    def __init__(
        self,
        log_dir,
        sample_images,
        sample_labels,
        every_n_epochs=1,
        num_pairs=8,
        projector_images=None,
        projector_labels=None,
        class_names=None,
    ):
        super().__init__()
        self.log_dir = log_dir
        self.sample_images, self.sample_labels = np.asarray(sample_images), np.asarray(sample_labels)
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.num_pairs = int(num_pairs)
        self.projector_images = None if projector_images is None else np.asarray(projector_images)
        self.projector_labels = None if projector_labels is None else np.asarray(projector_labels)
        self.class_names = list(class_names) if class_names is not None else None
        self._writer = None

    def _label_text(self, row):
        idx = np.flatnonzero(row > 0.5)
        names = [self.class_names[i] if self.class_names else str(i) for i in idx]
        return "+".join(names)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "coophash"))
        relaxed = np.asarray(self.model.hash_network.relaxed_codes(normalize_images(self.sample_images)))
        bits = sign_codes(relaxed).astype(np.float32)
        balance = 1.0 - np.abs(bits.mean(0)).mean()
        ok = bits.std(0) > 0
        corr = np.corrcoef(bits[:, ok].T) if ok.sum() > 1 else np.zeros((1, 1))
        off = np.abs(corr[~np.eye(len(corr), dtype=bool)]) if len(corr) > 1 else np.zeros(1)
        with self._writer.as_default(step=epoch):
            tf.summary.scalar("bits/balance", balance)
            tf.summary.scalar("bits/correlation", float(off.mean()))
            tf.summary.histogram("hash/relaxed_codes", relaxed)
            if hasattr(self.model, "generate_contrastive_pairs"):
                self._write_pairs(epoch)
        self._writer.flush()
        if logs is not None:
            logs["bit_correlation"] = float(off.mean())

    def _write_pairs(self, epoch):
        m = self.model
        n = min(self.num_pairs, len(self.sample_images))
        seed = tf.constant([epoch, 7], tf.int32)
        pairs = m.generate_contrastive_pairs(m.labels_to_multi_hot(tf.constant(self.sample_labels[:n])), seed)
        revised, _ = m.revise_pairs(pairs, seed)
        columns = [pairs.positive, revised.positive, pairs.negative, revised.negative]
        grid = image_grid([denormalize_images(c).numpy() for c in columns])
        labels = "\n".join(
            f"row {i}: c+ = {self._label_text(p)}, c- = {self._label_text(q)}"
            for i, (p, q) in enumerate(zip(pairs.positive_labels.numpy(), pairs.negative_labels.numpy()))
        )
        tf.summary.image(
            "pairs/generated_and_revised",
            grid[None],
            max_outputs=1,
            description="columns: x^+ = g(z, c+), x~+ (Langevin-revised), x^- = g(z, c-), x~-",
        )
        tf.summary.text("pairs/labels", labels)
        start, labels_all = pairs.images(), pairs.labels()
        energy_start = m.hash_network.energy(start, labels_all)
        for t in range(1, m.config.langevin_steps + 1):
            x_t, _ = m.langevin_revise(start, labels_all, seed, steps=t)
            rms = float(tf.sqrt(tf.reduce_mean(tf.square(x_t - start))))
            gain = float(tf.reduce_mean(m.hash_network.energy(x_t, labels_all) - energy_start))
            tf.summary.scalar(f"langevin/distance_after_step_{t}", rms)
            tf.summary.scalar(f"langevin/energy_gain_after_step_{t}", gain)

    def on_train_end(self, logs=None):
        if self.projector_images is not None:
            write_projector(self.log_dir, self.model, self.projector_images, self.projector_labels, self.class_names)
        if self._writer is not None:
            self._writer.close()


CoopHashTensorBoard = HashingTensorBoard  # the name used before every model had it


def write_projector(log_dir, model, images, labels, class_names=None):
    """Embedding projector files in the log_dir root (Keras 3's own projector support does not
    produce files the plugin can read): checkpoint of the ±1 codes, metadata.tsv, sprite.png."""
    from tensorboard.plugins import projector

    os.makedirs(log_dir, exist_ok=True)
    codes = model.encode(images).astype(np.float32)
    embedding = tf.Variable(codes, name="codes")
    tf.train.Checkpoint(embedding=embedding).save(os.path.join(log_dir, "embedding.ckpt"))
    labels = np.asarray(labels)
    with open(os.path.join(log_dir, "metadata.tsv"), "w") as fh:
        fh.write("label\tcode\n")
        for lab, code in zip(labels, codes):
            lab_text = (
                class_names[int(lab)]
                if class_names is not None and np.ndim(lab) == 0
                else str(lab.tolist() if np.ndim(lab) else int(lab))
            )
            fh.write(f"{lab_text}\t{''.join('1' if b > 0 else '0' for b in code)}\n")
    h, w, c = images.shape[1:]
    side = int(np.ceil(np.sqrt(len(images))))
    sprite = np.zeros((side * h, side * w, c), np.uint8)
    for i, im in enumerate(images):
        r, col = divmod(i, side)
        sprite[r * h : (r + 1) * h, col * w : (col + 1) * w] = im
    tf.io.write_file(os.path.join(log_dir, "sprite.png"), tf.io.encode_png(sprite))
    config = projector.ProjectorConfig()
    emb = config.embeddings.add()
    emb.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
    emb.metadata_path = "metadata.tsv"
    emb.sprite.image_path = "sprite.png"
    emb.sprite.single_image_dim.extend([h, w])
    projector.visualize_embeddings(log_dir, config)


def read_progress(path):
    """The entries of a progress.jsonl file, oldest first ([] if there is none)."""
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def history_from_progress(path):
    """{metric: one value per epoch} from progress.jsonl (the log that spans a resumed run), with
    None where an epoch has no value (validation every N epochs), so every list is as long as
    the number of epochs."""
    # ProgressLog rewrites the file whole (temporary + rename), so no line is ever torn.
    entries = {e["epoch"]: e["logs"] for e in read_progress(path)}  # a re-run epoch replaces the lost one
    epochs = sorted(entries)
    keys = sorted({k for logs in entries.values() for k in logs})
    return {k: [entries[e].get(k) for e in epochs] for k in keys}


def _write_progress(path, entries):
    from coophash_keras.io import atomic_path

    with atomic_path(path, ".jsonl") as tmp, open(tmp, "w") as fh:
        fh.writelines(json.dumps(e) + "\n" for e in entries)


def keep_progress(path, epochs):
    """Keep the entries of the first `epochs` epochs (a run resumed from a backup of `epochs`
    epochs trains the later ones again), so every epoch is logged once."""
    entries = read_progress(path)
    kept = [e for e in entries if e["epoch"] < epochs]
    if len(kept) != len(entries):
        _write_progress(path, kept)


class ProgressLog(keras.callbacks.Callback):
    """One JSON line per finished epoch (epoch, optimizer iterations, logs), so a supervisor (or a
    test) can see how far a run got and whether a resumed run continued. The file is rewritten
    whole through a temporary and a rename at every epoch (it is small), so a kill never leaves
    half a line in it."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        entry = {"epoch": int(epoch), "time": time.time()}
        for group, optimizer in self.model.optimizers.items():
            entry[f"{group}_iterations"] = int(np.asarray(optimizer.iterations))
        entry["logs"] = {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}
        _write_progress(self.path, read_progress(self.path) + [entry])


# Fields a run stopped by divergence may be resumed with changed (they change no weight or step).
RESUMABLE_CHANGES = ("divergence_policy", "divergence_max_shrinks")


def check_backup_dir(backup_dir, model, data_record=None):
    """Before resuming, make sure the backup belongs to this model: the backup dir keeps the
    config it was made with (and `data_record`, e.g. the record of the run's unlabelled pool), and
    a difference is a ValueError naming the fields that differ (instead of a deep h5py/Keras trace
    when the weights do not fit, or a resume on other data)."""
    from coophash_keras.io import atomic_write_json

    os.makedirs(backup_dir, exist_ok=True)
    cfg_path = os.path.join(backup_dir, "coophash_config.json")
    current = json.loads(json.dumps({"model": type(model).__name__, **model.config.to_dict(), **(data_record or {})}))
    if os.path.exists(cfg_path):
        with open(cfg_path) as fh:
            saved = json.load(fh)
        diff = sorted(
            k for k in set(saved) | set(current) if saved.get(k) != current.get(k) and k not in RESUMABLE_CHANGES
        )
        if diff:
            raise ValueError(
                f"the backup in {backup_dir} was made with a different configuration (fields {diff}); "
                "use another --backup-dir or delete it to start over"
            )
    else:
        atomic_write_json(cfg_path, current)
