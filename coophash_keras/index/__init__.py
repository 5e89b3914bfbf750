"""Binary-code search: HammingIndex (exact C kernel on all cores, or FAISS), persisted in a
checksummed, memory-mapped file; MilvusIndex (a Milvus collection, milvus-lite or a cluster) with
the same search API."""

from coophash_keras.index.hamming_index import BACKENDS, MISSING, HammingIndex


def open_index(spec, verify=True):
    """An index file path -> HammingIndex (memory-mapped), or 'milvus:URI#COLLECTION' -> MilvusIndex."""
    if spec.startswith("milvus:"):
        from coophash_keras.index.milvus import MilvusIndex, parse_target

        return MilvusIndex(*parse_target(spec))
    return HammingIndex.load(spec, mmap=True, verify=verify)


def __getattr__(name):  # MilvusIndex without importing pymilvus for users who never need it
    if name == "MilvusIndex":
        from coophash_keras.index.milvus import MilvusIndex

        return MilvusIndex
    raise AttributeError(name)


__all__ = ["BACKENDS", "MISSING", "HammingIndex", "MilvusIndex", "open_index"]
