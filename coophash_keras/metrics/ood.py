"""Out-of-distribution detection metrics, pinned: a score is higher for images more like the
training data, and in-distribution images are the positive class (the convention of the energy
OOD paper, Liu et al. 2020; OpenOOD makes OOD the positive class instead).

  auroc(in, out)            P(score_in > score_out) + 0.5 P(score_in == score_out) over all pairs:
                            the area under the ROC curve, ties counted half (Mann-Whitney U / n m);
  threshold_at_tpr(in, t)   the highest threshold s with share(in >= s) >= t: the operating point
                            a served `in_distribution = score >= s` is set at;
  fpr_at_tpr(in, out, t)    share(out >= s) at that threshold (FPR@95%TPR with t = 0.95), with no
                            interpolation between scores.
"""

import numpy as np
from scipy.stats import rankdata


def _scores(values, what):
    arr = np.asarray(values, np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"no {what} scores")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{int(np.sum(~np.isfinite(arr)))} {what} scores are not finite")
    return arr


def auroc(in_scores, out_scores):
    """Area under the ROC curve with in-distribution as positive (1.0: every in-distribution score
    above every OOD score; 0.5: chance), from average ranks, so ties count half."""
    pos, neg = _scores(in_scores, "in-distribution"), _scores(out_scores, "out-of-distribution")
    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks: a tie counts half
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def threshold_at_tpr(in_scores, tpr=0.95):
    """The highest threshold s such that at least `tpr` of `in_scores` are >= s."""
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"the true-positive rate must be in (0, 1], got {tpr}")
    ordered = np.sort(_scores(in_scores, "in-distribution"))
    # k scores may fall below s while n - k >= tpr n; the small slack absorbs float error in n (1 - tpr)
    k = int(np.floor(len(ordered) * (1.0 - tpr) + 1e-9))
    return float(ordered[min(k, len(ordered) - 1)])


def fpr_at_tpr(in_scores, out_scores, tpr=0.95):
    """Share of OOD scores >= threshold_at_tpr(in_scores, tpr): the OOD images let through while
    `tpr` of the in-distribution ones are kept."""
    threshold = threshold_at_tpr(in_scores, tpr)
    return float(np.mean(_scores(out_scores, "out-of-distribution") >= threshold))


def ood_metrics(in_scores, out_scores, tpr=0.95):
    """{"auroc", "fpr@95tpr"} (the key names the asked TPR in percent)."""
    return {
        "auroc": auroc(in_scores, out_scores),
        f"fpr@{round(tpr * 100):d}tpr": fpr_at_tpr(in_scores, out_scores, tpr),
    }
