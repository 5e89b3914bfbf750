"""What CoopHash's generator makes on the 2x2 mosaics (multi-label): a picture and numbers, since
the generator diagnostics (coophash_keras.diagnostics) need a class per image.

For label sets c taken from real test-file mosaics, the samples g(z, c) and their Langevin revision.
Each 28x28 quadrant is classified by the Fashion-MNIST reference classifier (the diagnostics' own
instrument, trained on single items, cached); per image:
  precision  share of its 4 quadrants whose predicted class is in c
  recall     share of c's classes predicted in some quadrant
and the same numbers for the real mosaics that gave the label sets (the instrument's ceiling), and
both against another image's label set (chance).
Spread: the pixel std over 16 z of the samples of one label set, averaged over pixels and sets,
divided by the pixel std of the real test mosaics (near 0 = one image per label set). And whether
the label set matters: for 16 z x 16 label sets, the std over the sets at a fixed z against the
std over z at a fixed set (normalised pixels; a generator that ignores c has the first near 0).

    python benchmarks/mosaic_samples.py RUN_DIR --grid docs/generator/samples_mosaics.png --json out.json
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def quadrants(images):
    """uint8 [N, 2h, 2w, 1] -> [N, 4, h, w, 1] (row-major: top-left, top-right, bottom-left, bottom-right)."""
    n, hh, ww = images.shape[:3]
    h, w = hh // 2, ww // 2
    return np.stack([images[:, :h, :w], images[:, :h, w:], images[:, h:, :w], images[:, h:, w:]], axis=1)


def set_scores(predicted, multi_hot):
    """(precision, recall) per image: predicted [N, 4] class ids, multi_hot [N, C]."""
    hit = np.take_along_axis(multi_hot, predicted, axis=1) > 0
    found = np.zeros_like(multi_hot, bool)
    np.put_along_axis(found, predicted, True, axis=1)
    recall = (found & (multi_hot > 0)).sum(1) / np.maximum((multi_hot > 0).sum(1), 1)
    return hit.mean(1), recall


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--sets", type=int, default=64, help="label sets (from the first real test mosaics)")
    p.add_argument("--per-set", type=int, default=16, help="samples per label set (z ~ N(0, I))")
    p.add_argument("--grid", help="PNG: 8 label sets x 8 z, raw samples beside their revisions, real mosaic first")
    p.add_argument("--json")
    p.add_argument(
        "--no-reference", action="store_true", help="only the grid (the reference classifier trains once, minutes)"
    )
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    import tensorflow as tf

    from coophash_keras.data import load_dataset
    from coophash_keras.diagnostics.generator import label_samples, latents
    from coophash_keras.diagnostics.reference import ReferenceClassifier
    from coophash_keras.evaluation import load_run
    from coophash_keras.io import atomic_write_json, load_model
    from coophash_keras.preprocessing import to_pixels

    run = load_run(a.run_dir)
    model = load_model(os.path.join(a.run_dir, "model.keras"))
    mosaics = load_dataset("fashion_mosaics")
    test = np.flatnonzero(mosaics.extras["source_split"] == 1)[: a.sets]
    real, sets = mosaics.images[test], mosaics.labels[test]
    c = np.repeat(sets, a.per_set, axis=0).astype(np.float32)
    generated, revised = label_samples(model, c, a.seed)

    def pixels(x):
        x = np.asarray(to_pixels(model.hash_network.to_image_size(tf.convert_to_tensor(x))))
        return np.clip(np.round(x), 0, 255).astype(np.uint8)

    views = {"real": real, "generated": pixels(generated), "revised": pixels(revised)}
    if a.grid:
        from PIL import Image

        rows = []
        for s in range(min(8, a.sets)):
            cols = 8
            g = views["generated"][s * a.per_set : s * a.per_set + cols]
            r = views["revised"][s * a.per_set : s * a.per_set + cols]
            thin, wide = (np.full((real.shape[1], w, 1), 255, np.uint8) for w in (2, 8))
            parts = [real[s], wide]
            for panel in (g, r):
                parts += [x for tile in panel for x in (tile, thin)][:-1] + [wide]
            rows.append(np.concatenate(parts[:-1], axis=1))
            rows.append(np.full((4, rows[-1].shape[1], 1), 255, np.uint8))
        grid = np.concatenate(rows[:-1], axis=0)[..., 0]
        grid = np.repeat(np.repeat(grid, 2, 0), 2, 1)  # square pixels, 2x
        Image.fromarray(grid).save(a.grid)
        print("grid:", a.grid)

    # Does the label set change the sample? 16 z x 16 label sets: the pixel std over the sets at a
    # fixed z against the std over z at a fixed set, both against the real mosaics' std.
    zz = np.repeat(latents(model, 16, a.seed), 16, axis=0)
    cc = np.tile(sets[:16], (16, 1)).astype(np.float32)
    square = np.asarray(model.generator(zz, cc)).reshape(16, 16, -1)  # [z, label set, pixels], normalised
    real_pixel_std = real.reshape(len(real), -1).astype(np.float64).std(0).mean()  # grey levels
    real_std = float(real_pixel_std / 127.5)  # the same, in normalised pixels
    out = {
        "run_dir": a.run_dir,
        "run_method": run.get("method"),
        "std_over_label_sets": float(square.std(axis=1).mean()),
        "std_over_z": float(square.std(axis=0).mean()),
        "std_real": real_std,
    }
    if not a.no_reference:
        ref = ReferenceClassifier.for_data(load_dataset("fashion_mnist"), verbose=1)
        out["reference_accuracy"] = ref.accuracy
    for name, images in views.items() if not a.no_reference else ():
        labels = sets if name == "real" else c
        q = quadrants(images)
        predicted = ref.classify(q.reshape(-1, *q.shape[2:])).reshape(len(q), 4)
        precision, recall = set_scores(predicted, labels)
        out[name] = {"precision": float(precision.mean()), "recall": float(recall.mean()), "images": len(q)}
        # chance: the same predictions scored against another image's label set
        shuffled = np.roll(labels, a.per_set if name != "real" else 1, axis=0)
        p_chance, r_chance = set_scores(predicted, shuffled)
        out[name].update(precision_other_set=float(p_chance.mean()), recall_other_set=float(r_chance.mean()))
        if name != "real":
            per_set = images.reshape(a.sets, a.per_set, -1).astype(np.float64)
            within = per_set.std(axis=1).mean()
            out[name]["spread_ratio"] = float(within / real_pixel_std)
    print(json.dumps(out, indent=1))
    if a.json:
        atomic_write_json(a.json, out)


if __name__ == "__main__":
    main()
