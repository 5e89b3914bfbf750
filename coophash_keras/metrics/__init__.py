from coophash_keras.metrics.retrieval import (
    hamming_distances,
    hamming_rank,
    mean_average_precision,
    relevance_matrix,
    retrieval_metrics,
)

__all__ = ["hamming_distances", "hamming_rank", "mean_average_precision", "relevance_matrix", "retrieval_metrics"]
