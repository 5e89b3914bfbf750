"""What a run feeds `fit`: the labelled tf.data pipeline with a batch of the unlabelled pool per step,
the one pass a closed-form model is fitted on, and the `--unlabeled` pool, checked."""

from __future__ import annotations

import numpy as np

from coophash_keras.data.augment import augment_dataset
from coophash_keras.data.files import print_warning
from coophash_keras.data.image_set import with_pool
from coophash_keras.data.pool import SHUFFLE_BUFFER_IMAGES, load_pool, pool_overlap
from coophash_keras.run_spec import RunError


def training_dataset(model_class, config, data, split, seed, repeat=False, pool=None):
    """The labelled tf.data pipeline (augmented by `config.augmentation`, the same for every model),
    with a batch of the unlabelled pool per step for models that use one
    (`model_class.uses_unlabeled(config)`): `pool` (an UnlabeledPool, `--unlabeled`, streamed from
    its files) when given, else the images of `split.unlabeled`."""
    batch_size = config.batch_size
    train = data.subset(split.train)
    ds = train.as_dataset(batch_size, shuffle=True, seed=seed, drop_remainder=True, repeat=repeat)
    ds = augment_dataset(ds, config.augmentation, seed)
    unlabeled_batch = batch_size * config.unlabeled_batch_ratio
    if model_class.uses_unlabeled(config):
        if pool is not None:
            ds = with_pool(ds, pool.dataset(unlabeled_batch, seed))
        elif len(split.unlabeled) >= unlabeled_batch:
            own_pool = data.subset(split.unlabeled)
            batches = own_pool.image_batches(
                unlabeled_batch, shuffle=True, seed=seed, repeat=True, drop_remainder=True,
                shuffle_buffer=min(len(own_pool), SHUFFLE_BUFFER_IMAGES),
            )  # fmt: skip
            ds = with_pool(ds, batches)
    return ds


FIT_BATCH = 256  # images per batch while a closed-form model reads its data


def fitting_dataset(data, split, pool=None, seed=0):
    """What a closed-form (label-free) model is fitted on, once through, labels dropped: the
    labelled training images and the pool: `pool` (`--unlabeled`) if given, else the images
    `split.unlabeled` holds. A file pool is read in a seeded shuffled order, so a model that reads
    only the first `config.label_free_max_images` gets a random subset."""
    own = split.train if pool is not None else np.union1d(split.train, split.unlabeled)
    ds = data.subset(np.sort(own)).image_batches(FIT_BATCH)
    if pool is not None:
        ds = ds.concatenate(pool.dataset(FIT_BATCH, seed, shuffle=True, repeat=False, drop_remainder=False))
    return ds.prefetch(2)


POOL_METHODS = "code_classifier:fixmatch, orthohash:fixmatch, coophash:fewlabels, dshgan, itq, lsh"


def _load_pool(spec, cls, config, data, split, warn=print_warning):
    """The `--unlabeled` pool, checked: the model must use one, and it must fill a pool batch."""
    if not spec.unlabeled:
        return None
    if not cls.uses_unlabeled(config):
        raise RunError(
            f"--unlabeled {spec.unlabeled}: {spec.method or spec.model} does not use an unlabelled pool; "
            f"drop --unlabeled, or train a method that uses one (e.g. {POOL_METHODS})"
        )
    pool = load_pool(spec.unlabeled, config.image_shape, spec.data_dir, warn=warn)
    need = config.batch_size * config.unlabeled_batch_ratio
    if not cls.fitted_in_closed_form and len(pool) < need:
        raise RunError(
            f"--unlabeled {spec.unlabeled}: {len(pool)} images, fewer than one unlabelled batch of {need} "
            "(batch_size x unlabeled_batch_ratio)"
        )
    shared = pool_overlap(pool, data, np.union1d(split.query, split.database))
    if shared:
        warn(
            f"--unlabeled {spec.unlabeled}: {shared} of its {len(pool)} images are also query or database images "
            f"of {data.name}; they are trained on unlabelled and retrieved at evaluation"
        )
    return pool
