"""CoopHash loss terms, each returning one value per example so the model can scale them by the
global batch (MirroredStrategy sums gradients across replicas)."""

from keras import ops


def maximum_likelihood_loss(energy_real, energy_revised):
    """Eq. 4 as a loss: f_E(x_rev) - f_E(x). Minimising it raises f_E on data and lowers it on
    revised samples (x_rev held constant) - the Monte-Carlo maximum-likelihood gradient."""
    return energy_revised - energy_real


def classification_loss(logits, labels_multi_hot, multi_label):
    """Softmax cross-entropy for single-label data, sigmoid cross-entropy for multi-label."""
    if multi_label:
        per_class = ops.binary_crossentropy(labels_multi_hot, logits, from_logits=True)
        return ops.mean(per_class, axis=-1)
    return ops.categorical_crossentropy(labels_multi_hot, logits, from_logits=True)


def orthohash_loss(cosine, labels_multi_hot, scale, margin, multi_label):
    """OrthoHash's loss (kamwoh/orthohash), per example: cross-entropy of s * (cos - m * y) against
    y normalised to sum to 1 (one-hot, or the official multi-label 'label_smoothing' form). Used by
    OrthoHash and by every model whose class read-out is the codebook (config.classifier_input)."""
    logits = scale * (cosine - margin * labels_multi_hot)
    log_p = ops.log_softmax(logits, axis=-1)
    target = labels_multi_hot / ops.maximum(ops.sum(labels_multi_hot, axis=-1, keepdims=True), 1.0)
    ce = -ops.sum(target * log_p, axis=-1)
    return {"classification_loss": ce, "total": ce}


def triplet_loss(anchor, positive, negative, margin):
    """max(0, m + d(a, p) - d(a, n)) with d = mean squared distance of relaxed codes
    (the L2 relaxation of the Hamming triplet, as in DSH-GAN)."""
    d_pos = ops.mean(ops.square(anchor - positive), axis=-1)
    d_neg = ops.mean(ops.square(anchor - negative), axis=-1)
    return ops.relu(margin + d_pos - d_neg)


def in_batch_triplet_loss(codes, labels_multi_hot, margin):
    """Triplets from real data: for each anchor the hardest in-batch positive (farthest code with a
    shared label) and hardest negative (closest code with no shared label). Anchors without a
    positive or a negative contribute 0."""
    sq = ops.mean(ops.square(ops.expand_dims(codes, 1) - ops.expand_dims(codes, 0)), axis=-1)
    similar = ops.cast(ops.matmul(labels_multi_hot, ops.transpose(labels_multi_hot)) > 0, sq.dtype)
    eye = ops.eye(ops.shape(sq)[0], dtype=sq.dtype)
    pos_mask = similar * (1.0 - eye)
    neg_mask = 1.0 - similar
    hardest_pos = ops.max(sq * pos_mask, axis=1)
    hardest_neg = ops.min(sq + 1e6 * (1.0 - neg_mask), axis=1)
    valid = ops.cast((ops.sum(pos_mask, 1) > 0) & (ops.sum(neg_mask, 1) > 0), sq.dtype)
    return valid * ops.relu(margin + hardest_pos - hardest_neg)


def quantization_loss(relaxed_codes):
    """mean (|h| - 1)^2: pushes tanh outputs towards +-1 so sign() loses little."""
    return ops.mean(ops.square(ops.abs(relaxed_codes) - 1.0), axis=-1)


def kl_divergence(z_mean, z_log_var):
    """KL(N(mu, sigma^2) || N(0, I)), summed over latent dimensions."""
    return -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)


def gaussian_nll(z, z_mean, z_log_var):
    """-log N(z; mean, exp(log_var)) summed over dimensions, without the constant (D/2) log(2 pi)."""
    return 0.5 * ops.sum(ops.square(z - z_mean) * ops.exp(-z_log_var) + z_log_var, axis=-1)


def reconstruction_loss(target, reconstruction, reduction="mean"):
    """||x_rev - g(c, z~)||^2 per example (Eq. 2), summed over pixels ('sum') or averaged
    ('mean', and 'gaussian', whose KL scale the model applies)."""
    sq = ops.reshape(ops.square(target - reconstruction), (ops.shape(target)[0], -1))
    return ops.sum(sq, axis=-1) if reduction == "sum" else ops.mean(sq, axis=-1)


def pseudo_label_loss(strong_logits, weak_logits, threshold, multi_label):
    """FixMatch (Sohn et al. 2020): per unlabeled image, cross-entropy of the strong view's logits
    against the weak view's prediction where its confidence is >= threshold (0 elsewhere), and the
    0/1 mask. Multi-label: per class, sigmoid cross-entropy against round(p) where max(p, 1 - p) is
    >= threshold, averaged over classes; the mask is the share of confident classes."""
    if multi_label:
        p = ops.sigmoid(weak_logits)
        mask = ops.cast(ops.maximum(p, 1.0 - p) >= threshold, strong_logits.dtype)
        per_class = ops.binary_crossentropy(ops.cast(p > 0.5, strong_logits.dtype), strong_logits, from_logits=True)
        return ops.mean(per_class * mask, axis=-1), ops.mean(mask, axis=-1)
    p = ops.softmax(weak_logits, axis=-1)
    mask = ops.cast(ops.max(p, axis=-1) >= threshold, strong_logits.dtype)
    target = ops.one_hot(ops.argmax(p, axis=-1), ops.shape(p)[-1])
    return ops.categorical_crossentropy(target, strong_logits, from_logits=True) * mask, mask
