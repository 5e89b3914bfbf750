"""Callbacks to watch, select and resume CoopHash training. They hold numpy arrays only, so
keras-tuner can deep-copy them for every trial."""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from coophash_keras.codes import sign_codes
from coophash_keras.metrics import retrieval_metrics
from coophash_keras.preprocessing import denormalize_images, normalize_images


class RetrievalMetricsCallback(keras.callbacks.Callback):
    """Every `every_n_epochs`, encode a query and a database set and put validation retrieval
    metrics into the epoch logs: `val_map` (mAP over the whole database) and `val_map@K`.
    List it BEFORE TensorBoard / ModelCheckpoint / a tuner so they see the values."""

    def __init__(self, query_images, query_labels, database_images, database_labels, every_n_epochs=1, topk=(100,)):
        super().__init__()
        self.query_images, self.query_labels = np.asarray(query_images), np.asarray(query_labels)
        self.database_images, self.database_labels = np.asarray(database_images), np.asarray(database_labels)
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.topk = tuple(int(k) for k in topk)
        self.last = {}

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        last_epoch = self.params.get("epochs", epoch + 1) - 1 if self.params else epoch
        if (epoch + 1) % self.every_n_epochs and epoch != last_epoch:
            logs.update(self.last)  # repeat the last value so monitors see the key on every epoch
            return
        q = self.model.encode(self.query_images)
        db = self.model.encode(self.database_images)
        res = retrieval_metrics(q, self.query_labels, db, self.database_labels, topk=self.topk, pr_curve=False)
        self.last = {"val_map": res["mAP@all"], **{f"val_map@{k}": res[f"mAP@{k}"] for k in self.topk}}
        logs.update(self.last)


class CoopHashTensorBoard(keras.callbacks.Callback):
    """What Keras' TensorBoard callback cannot show, written eagerly at epoch end with its own
    writer (`<log_dir>/coophash`; tf.summary inside train_step is unreliable):
      scalars   bits/balance, bits/correlation (mean |off-diagonal| correlation of code bits)
      images    pairs/generated_and_revised: per row x^+ | x~+ | x^- | x~- (labels in pairs/labels)
      histogram hash/pre_activation
    and at the end of training the embedding projector (codes of `projector_images`, label
    metadata, sprite) written into the log_dir root, where the projector plugin looks."""

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
        m = self.model
        x = normalize_images(self.sample_images)
        features = m.descriptor.features(x)
        pre = m.descriptor.hash_head.pre_activation(features).numpy()
        bits = sign_codes(pre).astype(np.float32)
        balance = 1.0 - np.abs(bits.mean(0)).mean()
        std = bits.std(0)
        ok = std > 0
        corr = np.corrcoef(bits[:, ok].T) if ok.sum() > 1 else np.zeros((1, 1))
        off = np.abs(corr[~np.eye(len(corr), dtype=bool)]) if len(corr) > 1 else np.zeros(1)
        n = min(self.num_pairs, len(self.sample_images))
        c_pos = m.labels_to_multi_hot(tf.constant(self.sample_labels[:n]))
        seed = tf.constant([epoch, 7], tf.int32)
        x_pos, x_neg, c_neg, _ = m.generate_contrastive_pairs(c_pos, seed)
        revised, _ = m.langevin_revise(tf.concat([x_pos, x_neg], 0), tf.concat([c_pos, c_neg], 0), seed)
        r_pos, r_neg = tf.split(revised, 2)
        grid = tf.concat([x_pos, r_pos, x_neg, r_neg], axis=2)  # [n, H, 4W, C] per pair
        grid = tf.reshape(grid, [1, -1, grid.shape[2], grid.shape[3]])  # one image, pairs stacked
        labels = "\n".join(
            f"row {i}: c+ = {self._label_text(p)}, c- = {self._label_text(q)}"
            for i, (p, q) in enumerate(zip(c_pos.numpy(), c_neg.numpy()))
        )
        with self._writer.as_default(step=epoch):
            tf.summary.scalar("bits/balance", balance)
            tf.summary.scalar("bits/correlation", float(off.mean()))
            tf.summary.histogram("hash/pre_activation", pre)
            tf.summary.image(
                "pairs/generated_and_revised",
                denormalize_images(grid),
                max_outputs=1,
                description="columns: x^+ = g(z, c+), x~+ (Langevin-revised), x^- = g(z, c-), x~-",
            )
            tf.summary.text("pairs/labels", labels)
        self._writer.flush()
        if logs is not None:
            logs["bit_correlation"] = float(off.mean())

    def on_train_end(self, logs=None):
        if self.projector_images is not None:
            write_projector(self.log_dir, self.model, self.projector_images, self.projector_labels, self.class_names)
        if self._writer is not None:
            self._writer.close()


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


class ProgressLog(keras.callbacks.Callback):
    """Appends one JSON line per finished epoch (epoch, optimizer iterations, logs) to a file, so a
    supervisor (or a test) can see how far a run got and whether a resumed run continued."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        entry = {"epoch": int(epoch)}
        # CoopHash holds descriptor + generator optimizers, DSH-GAN discriminator + generator, the
        # plain baseline Keras' one `optimizer`.
        names = [
            n
            for n in ("descriptor_optimizer", "discriminator_optimizer", "generator_optimizer")
            if getattr(self.model, n, None) is not None
        ] or ["optimizer"]
        for name in names:
            entry[name.replace("optimizer", "iterations")] = int(np.asarray(getattr(self.model, name).iterations))
        entry["logs"] = {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def check_backup_dir(backup_dir, model):
    """Before a BackupAndRestore resume, make sure the backup belongs to this model: the backup
    dir keeps the config it was made with; a different config, or a checkpoint that cannot be
    read, is a ValueError naming the problem instead of a deep h5py/Keras trace."""
    os.makedirs(backup_dir, exist_ok=True)
    cfg_path = os.path.join(backup_dir, "coophash_config.json")
    current = model.config.to_dict()
    if os.path.exists(cfg_path):
        with open(cfg_path) as fh:
            saved = json.load(fh)
        diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if diff:
            raise ValueError(
                f"the backup in {backup_dir} was made with a different configuration (fields {diff}); "
                "use another --backup-dir or delete it to start over"
            )
    else:
        with open(cfg_path, "w") as fh:
            json.dump(current, fh, indent=2)
    weights = os.path.join(backup_dir, "latest.weights.h5")
    if os.path.exists(weights):
        import h5py

        try:
            with h5py.File(weights, "r") as h5:
                names = []
                h5.visit(names.append)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same problem to the user
            raise ValueError(
                f"the backup checkpoint {weights} is corrupted ({exc}); delete {backup_dir} to start over"
            ) from None
        if not any(n.startswith("descriptor") for n in names):
            raise ValueError(
                f"the backup checkpoint {weights} holds no CoopHash weights; delete {backup_dir} to start over"
            )
