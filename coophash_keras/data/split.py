"""Seeded retrieval split: query / labeled train / database / unlabeled pool."""

import dataclasses

import numpy as np


@dataclasses.dataclass
class RetrievalSplit:
    query: np.ndarray
    train: np.ndarray
    database: np.ndarray
    unlabeled: np.ndarray

    def save(self, path):
        from coophash_keras.io import atomic_path

        with atomic_path(path, ".npz") as tmp:
            np.savez(tmp, **dataclasses.asdict(self))

    @classmethod
    def load(cls, path):
        with np.load(path) as z:
            return cls(**{f.name: z[f.name] for f in dataclasses.fields(cls)})

    def counts(self):
        return {k: int(len(v)) for k, v in dataclasses.asdict(self).items()}


def _class_members(labels):
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return [np.flatnonzero(labels == k) for k in range(int(labels.max()) + 1)]
    return [np.flatnonzero(labels[:, k] > 0) for k in range(labels.shape[1])]


def _take_per_class(members, n, available, rng, what):
    """Up to n per class from `available` (multi-label: greedily by class; an image counts once)."""
    chosen = []
    for k, idx in enumerate(members):
        pool = idx[available[idx]]
        if n is not None and len(pool) < n:
            have = "no images" if len(idx) == 0 else f"only {len(pool)} of its {len(idx)} images left"
            raise ValueError(f"class {k} has {have}, fewer than the {n} {what} per class asked for")
        pick = rng.permutation(pool)[: (len(pool) if n is None else n)]
        available[pick] = False
        chosen.append(pick)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def retrieval_split(
    labels, query_per_class, train_per_class=None, database="rest", seed=0, query_candidates=None, train_candidates=None
):
    """Split example indices for retrieval experiments.

    query:     `query_per_class` images of each class (from `query_candidates`, default all);
    train:     `train_per_class` labeled images of each class from the non-query images (from
               `train_candidates`, default all); None = every non-query image;
    unlabeled: the non-query training candidates not chosen as labeled train;
    database:  'rest' = every non-query image (train included, the common 'mAP@all' protocol),
               'disjoint' = non-query images that are not labeled train, or an index array.
    Query is disjoint from train and database in every case."""
    labels = np.asarray(labels)
    n = len(labels)
    if n == 0:
        raise ValueError("cannot split 0 examples")
    if labels.ndim == 1 and labels.min() < 0:
        raise ValueError(
            "a retrieval split needs class labels, and some labels are -1 (unlabelled images, e.g. images:PATH); "
            "use folder:PATH (one subfolder per class) or csv:PATH"
        )
    rng = np.random.default_rng(seed)
    members = _class_members(labels)

    available = np.zeros(n, bool)
    available[np.arange(n) if query_candidates is None else np.asarray(query_candidates)] = True
    query = _take_per_class(members, query_per_class, available, rng, "query images")

    not_query = np.ones(n, bool)
    not_query[query] = False
    candidates = not_query.copy()
    if train_candidates is not None:
        mask = np.zeros(n, bool)
        mask[np.asarray(train_candidates)] = True
        candidates &= mask
    available = candidates.copy()
    train = _take_per_class(members, train_per_class, available, rng, "labeled images")
    unlabeled = np.flatnonzero(available)  # candidates left over

    if isinstance(database, str):
        if database == "rest":
            database = np.flatnonzero(not_query)
        elif database == "disjoint":
            mask = not_query.copy()
            mask[train] = False
            database = np.flatnonzero(mask)
        else:
            raise ValueError(f"database must be 'rest', 'disjoint' or an index array, got {database!r}")
    else:
        database = np.asarray(database)
        if np.intersect1d(database, query).size:
            raise ValueError("the chosen database overlaps the query set")
    return RetrievalSplit(query, train, np.sort(database), unlabeled)


def random_split(num_examples, num_query, num_train, seed=0, query_candidates=None, train_candidates=None):
    """A seeded split that ignores labels (for multi-label sets, where per-class quotas overlap):
    `num_query` queries from `query_candidates`, `num_train` labelled images from the other
    `train_candidates`, the remaining candidates as the unlabelled pool, every non-query image as
    the database."""
    rng = np.random.default_rng(seed)
    everything = np.arange(num_examples)
    q_cand = everything if query_candidates is None else np.asarray(query_candidates)
    if num_query > len(q_cand):
        raise ValueError(f"{num_query} queries asked for, only {len(q_cand)} candidates")
    query = np.sort(rng.choice(q_cand, num_query, replace=False))
    not_query = np.ones(num_examples, bool)
    not_query[query] = False
    t_cand = everything if train_candidates is None else np.asarray(train_candidates)
    t_cand = t_cand[not_query[t_cand]]
    if num_train > len(t_cand):
        raise ValueError(f"{num_train} labelled images asked for, only {len(t_cand)} candidates")
    train = np.sort(rng.choice(t_cand, num_train, replace=False))
    unlabeled = np.setdiff1d(t_cand, train)
    return RetrievalSplit(query=query, train=train, database=np.flatnonzero(not_query), unlabeled=unlabeled)
