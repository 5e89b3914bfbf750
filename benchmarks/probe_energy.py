"""What CoopHash's energy head has learned (docs/OOD.md): for a trained run, the served energy
log sum_c exp f_E(x, c) of real queries, of the generator's samples g(z, c), of their Langevin
revisions (the config's T steps, as in training), of noise, and of Langevin chains started from
uniform noise and run K steps on f_E(., c); the AUROC of the real queries against each; a picture
of the chains from noise (a row per K, a column per class). With --train-epochs, trains the run's
configuration again and measures the same energies after every epoch (the trajectory). A run with
noise chains (config.noise_chains) also gets its replay buffer's energy and a picture of it
(PICTURE_buffer.png: a row per slot, a column per class).

    python benchmarks/probe_energy.py --run runs/ood/digits_coophash_s0 --out results/ood/probe_digits.json \\
        --picture docs/ood/langevin_from_noise_digits.png [--train-epochs 20]
"""

import argparse
import json
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from alone import cpu_name  # noqa: E402

from coophash_keras.data import RetrievalSplit  # noqa: E402
from coophash_keras.evaluation import load_run, load_run_data  # noqa: E402
from coophash_keras.io import atomic_write_json, load_model  # noqa: E402
from coophash_keras.metrics.ood import auroc  # noqa: E402
from coophash_keras.preprocessing import normalize_images  # noqa: E402

CHAIN_STEPS = (0, 5, 20, 100, 500)


def served_energy(model, x):
    """log sum_c exp f_E(x, c) of normalised images x: the energy head (what the export serves
    with served_energy 'energy_head', the default before issue 39)."""
    return np.asarray(model.hash_network.serving_outputs(x)["energy_head"], np.float64)


def measure(model, queries, num_classes, seed=0, per_class=20, chain_steps=CHAIN_STEPS):
    """{set: served energies} and the chains' images {K: [num_classes, H, W, C] in [-1, 1]}."""
    n = per_class * num_classes
    labels = tf.one_hot(np.repeat(np.arange(num_classes), per_class), num_classes)
    step_seed = tf.constant([seed, 7], tf.int32)
    pairs = model.generate_contrastive_pairs(labels, step_seed)
    revised, _ = model.langevin_revise(pairs.positive, labels, step_seed)
    shape = queries.shape[1:]
    rng = np.random.default_rng(seed)
    energies = {
        "real queries": served_energy(model, normalize_images(queries)),
        "generator g(z, c)": served_energy(model, pairs.positive),
        "revised (T steps)": served_energy(model, revised),
        "uniform noise": served_energy(model, normalize_images(rng.integers(0, 256, (n, *shape), dtype=np.uint8))),
    }
    start = tf.random.stateless_uniform([n, *shape], step_seed, -1.0, 1.0)
    chains, done, x = {}, 0, start
    for k in chain_steps:
        if k > done:
            x, _ = model.langevin_revise(x, labels, tf.constant([seed, 100 + k], tf.int32), steps=k - done)
            done = k
        energies[f"Langevin from noise, {k} steps"] = served_energy(model, x)
        chains[k] = np.asarray(x)[::per_class]  # the first chain of each class
    buffer = getattr(model, "noise_chain_buffer", None)
    if buffer is not None:  # config.noise_chains: the training's chains from noise, where they ended
        images = np.asarray(buffer.numpy())
        energies["noise-chain replay buffer"] = served_energy(model, images.reshape(-1, *images.shape[2:]))
    return energies, chains


def buffer_rows(model, slots=10):
    """{slot: [num_classes, H, W, C]}: the first `slots` noise-chain buffer slots of each class
    (for save_picture: a row per slot, a column per class); None without noise chains."""
    buffer = getattr(model, "noise_chain_buffer", None)
    if buffer is None:
        return None
    images = np.asarray(buffer.numpy())
    return {s: images[:, s] for s in range(min(slots, images.shape[1]))}


def summary(energies):
    real = energies["real queries"]
    return {
        name: {
            "mean": float(np.mean(v)),
            "std": float(np.std(v)),
            "auroc_real_vs_this": None if name == "real queries" else auroc(real, v),
        }
        for name, v in energies.items()
    }


def save_picture(chains, path, scale=6):
    """A row per chain length K, a column per class; square pixels (each pixel scale x scale)."""
    from PIL import Image

    rows = []
    for k in sorted(chains):
        tiles = np.clip(np.round((np.asarray(chains[k]) + 1.0) * 127.5), 0, 255).astype(np.uint8)
        tiles = np.repeat(np.repeat(tiles, scale, axis=1), scale, axis=2)
        tiles = np.pad(tiles, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=255)
        rows.append(np.concatenate(list(tiles), axis=1))
    grid = np.concatenate(rows, axis=0)
    if grid.shape[-1] == 1:
        grid = grid[..., 0]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    Image.fromarray(grid).save(path)


def trajectory(run_dir, queries, epochs, seed):
    """Train the run's configuration again for `epochs`, measuring the energies after each."""
    import keras

    from coophash_keras.runs import RunSpec, train_run

    rows = []

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            energies, _ = measure(self.model, queries, self.model.config.num_classes, seed, chain_steps=(0, 20, 100))
            rows.append({"epoch": epoch + 1, **{k: float(np.mean(v)) for k, v in energies.items()}})
            print(json.dumps({k: round(v, 3) for k, v in rows[-1].items()}), flush=True)

    run = load_run(run_dir)
    spec = RunSpec(
        run_dir=run_dir.rstrip("/") + "_trajectory",
        dataset=run["dataset"],
        model="coophash",
        bits=32,
        epochs=epochs,
        seed=run.get("seed") or 0,
    )
    train_run(spec, extra_callbacks=[Probe()])
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--picture", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-epochs", type=int, default=0)
    a = p.parse_args(argv)
    run = load_run(a.run)
    data = load_run_data(run)
    split = RetrievalSplit.load(os.path.join(a.run, "split.npz"))
    queries = data.images[split.query]
    model = load_model(os.path.join(a.run, "model.keras"))
    energies, chains = measure(model, queries, data.num_classes, a.seed)
    save_picture(chains, a.picture)
    rows = buffer_rows(model)
    if rows is not None:
        save_picture(rows, os.path.splitext(a.picture)[0] + "_buffer.png")
    record = {
        "run_dir": a.run,
        "langevin": {
            k: getattr(model.config, k) for k in ("langevin_steps", "langevin_step_size", "langevin_noise_scale")
        },
        "energies": summary(energies),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count()},
        "command": " ".join(shlex.quote(x) for x in [sys.executable, *sys.argv]),
    }
    if a.train_epochs:
        record["trajectory"] = trajectory(a.run, queries, a.train_epochs, a.seed)
    atomic_write_json(a.out, record)
    for name, s in record["energies"].items():
        auc = "" if s["auroc_real_vs_this"] is None else f", AUROC real vs this {s['auroc_real_vs_this']:.3f}"
        print(f"{name}: energy {s['mean']:.3f} ± {s['std']:.3f}{auc}")


if __name__ == "__main__":
    main()
