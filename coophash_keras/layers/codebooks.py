"""Fixed +-1 class codewords (CSQ's hash centres, OrthoHash's codebook, DPN's targets, and the
codebook read-out CoopHash's descriptor may use), deterministic given a seed, and the centre of a
multi-label set. Here beside the heads that read them, below the models and the baselines."""

import numpy as np
from scipy.linalg import hadamard


def _is_power_of_two(n):
    return n > 0 and n & (n - 1) == 0


def random_codebook(num_classes, num_bits, seed, tries=200):
    """Bernoulli(0.5) +-1 codewords; of `tries` draws, the one with the largest minimum pairwise
    Hamming distance (CSQ's random centres when Hadamard ones do not exist)."""
    rng = np.random.default_rng(seed)
    best, best_min = None, -1
    for _ in range(tries):
        book = rng.choice([-1.0, 1.0], size=(num_classes, num_bits)).astype(np.float32)
        dist = 0.5 * (num_bits - book @ book.T)
        np.fill_diagonal(dist, num_bits)
        if dist.min() > best_min:
            best, best_min = book, dist.min()
    return best


def orthohash_codebook(num_classes, num_bits, seed):
    """OrthoHash's codebook (kamwoh/orthohash draws once): the one OrthoHash trains against and
    CoopHash's 'codebook' read-out reads."""
    return random_codebook(num_classes, num_bits, seed, tries=1)


def hadamard_centres(num_classes, num_bits, seed):
    """CSQ's hash centres (Yuan et al., CVPR 2020; swuxyj/DeepHash-pytorch CSQ.py): the rows of
    [H_K; -H_K] for a K x K Hadamard matrix H_K, which exist when K is a power of two and there
    are at most 2K classes; any two of them are K/2 bits apart (or K for a row and its negation).
    Otherwise random centres (random_codebook)."""
    if _is_power_of_two(num_bits) and num_classes <= 2 * num_bits:
        h = hadamard(num_bits).astype(np.float32)
        return np.concatenate([h, -h])[:num_classes]
    return random_codebook(num_classes, num_bits, seed)


def sign_of_gaussian(num_classes, num_bits, seed):
    """DPN's default targets ('N': the sign of a standard normal draw; kamwoh/DPN main.py)."""
    g = np.random.default_rng(seed).standard_normal((num_classes, num_bits))
    return np.where(g >= 0, 1.0, -1.0).astype(np.float32)


def label_set_centre(labels_multi_hot, codebook, tie_breaker):
    """The centre of a label set (CSQ's and DPN's multi-label rule): per bit, the majority sign of
    the set's codewords, and `tie_breaker`'s bit (a fixed random +-1 code) where they tie.
    Works on tensors (keras.ops)."""
    from keras import ops

    votes = ops.matmul(labels_multi_hot, codebook)
    return ops.where(votes > 0, 1.0, ops.where(votes < 0, -1.0, ops.cast(tie_breaker, votes.dtype)))
