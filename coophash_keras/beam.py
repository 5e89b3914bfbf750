"""Hash image files on Apache Beam: any number of files, on any runner (`pip install coophash-keras[beam]`).

The pipeline matches file patterns on any Beam file system (local, gs://, s3://, hdfs://), reads
each file's bytes, runs Beam's `RunInference` on the exported SavedModel's `hash_image_bytes`
signature (the bytes travel, TensorFlow decodes them in the graph, Beam batches them) and writes
Parquet shards of (path, packed code) in the codes-1 format of docs/BEAM.md. It needs only the
`coophash export` directory: no `.keras` file, no training code.

A file that cannot be read or decoded is skipped with one logged line and counted (the Beam
counters `coophash:skipped_files` and `coophash:encoded_files`); it never fails the pipeline, and
the other images of its batch keep their codes.

Example:

```python
from coophash_keras.beam import encode_files

summary = encode_files(["photos/**"], "models/coophash/1", "codes/photos",
                       ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
```
"""

import json
import logging
import os
import posixpath
import tempfile

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

CODES_FORMAT = "codes-1"
SIGNATURE = "hash_image_bytes"
COUNTER_NAMESPACE = "coophash"
DEFAULT_BATCH_SIZE = 256
_LOG = logging.getLogger("coophash_keras.beam")


class NoFilesMatchedError(ValueError):
    """An input pattern that matches no file (one line: the CLI prints it and exits with 2)."""


# ---------------------------------------------------------------------------- launcher side


def export_info(export_dir):
    """The export's assets.extra/coophash.json (config, signatures, model_fingerprint), read
    through Beam's file systems so that a gs:// or s3:// export works too."""
    path = FileSystems.join(export_dir, "assets.extra", "coophash.json")
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            info = json.loads(fh.read().decode("utf-8"))
    except Exception:  # Beam wraps a missing file in BeamIOError (or IOError, per file system)
        raise ValueError(
            f"{export_dir} is not a coophash export (no readable assets.extra/coophash.json); "
            "give a version directory written by `coophash export`, e.g. models/coophash/1"
        ) from None
    if SIGNATURE not in info.get("signatures", []) or "model_fingerprint" not in info:
        raise ValueError(f"{export_dir} has no {SIGNATURE} signature or model fingerprint: re-export it")
    return info


def codes_schema(num_bits, model_version):
    """The pyarrow schema of a codes-1 file: path string, code fixed_size_binary(K/8) packed as
    coophash_keras.codes.pack_codes (bit 1 = +1, MSB first), and the file's key-value metadata."""
    import pyarrow as pa

    metadata = {
        "coophash.num_bits": str(int(num_bits)),
        "coophash.model_version": str(model_version),
        "coophash.format": CODES_FORMAT,
    }
    return pa.schema([("path", pa.string()), ("code", pa.binary(int(num_bits) // 8))], metadata=metadata)


def check_patterns(patterns):
    """Each pattern must match at least one file (one cheap listing each, limit 1): a pattern
    that matches nothing is a NoFilesMatchedError naming it, before any worker starts."""
    if not patterns:
        raise NoFilesMatchedError("no input pattern given")
    for pattern in patterns:
        if FileSystems.get_scheme(pattern) is None and os.path.isdir(pattern):
            raise NoFilesMatchedError(
                f"{pattern} is a directory; give a file pattern such as {posixpath.join(pattern, '**')} "
                "(every file below it) or a *.jpg glob"
            )
        try:
            found = FileSystems.match([pattern], limits=[1])[0].metadata_list
        except Exception as exc:  # BeamIOError: an unknown bucket, a bad scheme, ...
            raise NoFilesMatchedError(f"cannot list {pattern}: {str(exc).splitlines()[0]}") from None
        if not found:
            raise NoFilesMatchedError(f"no file matches {pattern}")


# ---------------------------------------------------------------------------- worker side


def _local_copy(export_dir):
    """A local directory holding the export: itself if local, else a copy made through Beam's
    file systems (TensorFlow alone reads neither s3:// nor hdfs://)."""
    if FileSystems.get_scheme(export_dir) is None:
        return export_dir
    root = export_dir.rstrip("/")
    local = tempfile.mkdtemp(prefix="coophash-export-")
    for meta in FileSystems.match([root + "/**"])[0].metadata_list:
        rel = meta.path[len(root) + 1 :]
        if not rel or rel.endswith("/"):
            continue
        target = os.path.join(local, *rel.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with (
            FileSystems.open(meta.path, compression_type=CompressionTypes.UNCOMPRESSED) as src,
            open(target, "wb") as dst,
        ):
            dst.write(src.read())
    return local


def _reason(exc):
    """The line of an error that says what is wrong (TensorFlow's start with 'Graph execution
    error:' and a node's name)."""
    lines = [line.strip() for line in str(getattr(exc, "message", None) or exc).splitlines()]
    noise = ("Graph execution error", "Detected at node", "<stack traces", "[[")
    useful = [line for line in lines if line and not line.startswith(noise)] or [type(exc).__name__]
    return useful[0][:200]


class HashImageBytesHandler(ModelHandler):
    """Beam's model handler for the SavedModel's `hash_image_bytes` signature: a batch of encoded
    images (bytes) in, one result per image out, in order: its packed code (uint8 [K/8]), or the
    decode error's first line (str) for bytes TensorFlow cannot decode.

    A decode error fails the whole signature call, so a failing batch is split in halves until
    the bad images are alone: their neighbours still get codes, at log2(batch) extra calls.

    Beam's own TFModelHandlerTensor loads with `tf.keras.models.load_model`, which Keras 3 refuses
    for SavedModel directories, and its module imports tensorflow_hub; this handler loads with
    `tf.saved_model.load` and calls a named signature.

    Args:
        export_dir: a version directory written by `coophash export` (any Beam file system).
        min_batch_size: the smallest batch Beam's BatchElements forms (but for a bundle's last one).
        max_batch_size: the largest batch.
    """

    def __init__(self, export_dir, min_batch_size=DEFAULT_BATCH_SIZE, max_batch_size=DEFAULT_BATCH_SIZE):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self._export_dir = export_dir

    def load_model(self):
        import tensorflow as tf

        return tf.saved_model.load(_local_copy(self._export_dir))  # the object keeps its variables alive

    def run_inference(self, batch, model, inference_args=None):
        return [PredictionResult(data, out) for data, out in zip(batch, self._hash(model, list(batch)))]

    def _hash(self, model, batch):
        import tensorflow as tf

        try:
            packed = model.signatures[SIGNATURE](image_bytes=tf.constant(batch, tf.string))["packed"]
            return list(packed.numpy())
        except tf.errors.InvalidArgumentError as exc:  # undecodable bytes (TensorFlow's decode ops)
            if len(batch) == 1:
                return [_reason(exc)]
            half = len(batch) // 2
            return self._hash(model, batch[:half]) + self._hash(model, batch[half:])

    def get_num_bytes(self, batch):
        return sum(len(data) for data in batch)

    def get_metrics_namespace(self):
        return "coophash_hash_image_bytes"


class _ReadBytes(beam.DoFn):
    """ReadableFile -> (path, bytes); an empty or unreadable file is skipped with one line."""

    def __init__(self):
        self.skipped = Metrics.counter(COUNTER_NAMESPACE, "skipped_files")

    def process(self, readable):
        path = readable.metadata.path
        try:
            with readable.open(compression_type=CompressionTypes.UNCOMPRESSED) as fh:
                data = fh.read()
        except Exception as exc:  # a vanished file, no permission, a network error: one file's problem
            data, reason = None, f"unreadable: {_reason(exc)}"
        else:
            reason = "empty file"
        if not data:
            self.skipped.inc()
            _LOG.warning("skipped %s: %s", path, reason)
            return
        yield path, data


class _ToRow(beam.DoFn):
    """(path, PredictionResult) -> a codes-1 row; an undecodable image is skipped with one line."""

    def __init__(self):
        self.encoded = Metrics.counter(COUNTER_NAMESPACE, "encoded_files")
        self.skipped = Metrics.counter(COUNTER_NAMESPACE, "skipped_files")

    def process(self, keyed):
        path, result = keyed
        if isinstance(result.inference, str):
            self.skipped.inc()
            _LOG.warning("skipped %s: not a decodable image: %s", path, result.inference)
            return
        self.encoded.inc()
        yield {"path": path, "code": np.asarray(result.inference, np.uint8).tobytes()}


# ---------------------------------------------------------------------------- the pipeline


class HashFiles(beam.PTransform):
    """Patterns (a PCollection of str) -> codes-1 rows {"path", "code"} of every matched file.

    Args:
        export_dir: a `coophash export` version directory.
        min_batch_size, max_batch_size: Beam's batching of RunInference.
    """

    def __init__(self, export_dir, min_batch_size=DEFAULT_BATCH_SIZE, max_batch_size=DEFAULT_BATCH_SIZE):
        super().__init__()
        self._handler = HashImageBytesHandler(export_dir, min_batch_size, max_batch_size)

    def expand(self, patterns):
        return (
            patterns
            | "Match" >> fileio.MatchAll(fileio.EmptyMatchTreatment.DISALLOW)
            | "Spread" >> beam.Reshuffle()  # one pattern lists every file: spread them over the workers
            | "Open" >> fileio.ReadMatches(compression=CompressionTypes.UNCOMPRESSED)
            | "Read" >> beam.ParDo(_ReadBytes())
            | "Hash" >> RunInference(KeyedModelHandler(self._handler))
            | "Rows" >> beam.ParDo(_ToRow())
        )


def encode_files(patterns, export_dir, output_prefix, beam_args=(), batch_size=DEFAULT_BATCH_SIZE):
    """Run the pipeline and wait: every file matching `patterns` -> Parquet shards
    `<output_prefix>-SSSSS-of-NNNNN.parquet`. Returns {"encoded", "skipped", "num_bits",
    "model_version", "output_prefix"}.

    Args:
        patterns: file patterns on any Beam file system (`*` within a folder, `**` across).
        export_dir: a `coophash export` version directory (models/NAME/VERSION).
        output_prefix: where the shards go (any Beam file system).
        beam_args: Beam's pipeline options (--runner, --direct_num_workers, --project, ...); without
            --runner, Beam's local FnApiRunner (DirectRunner's engine for batch pipelines).
        batch_size: images per signature call (min and max of Beam's batching).
    """
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    info = export_info(export_dir)
    check_patterns(patterns)
    schema = codes_schema(info["config"]["num_bits"], info["model_fingerprint"])
    options = PipelineOptions(list(beam_args))
    if options.view_as(StandardOptions).runner is None:
        # DirectRunner's batch engine itself: DirectRunner would first try to download the Prism
        # runner's binary, and Prism ignores --direct_running_mode / --direct_num_workers.
        options.view_as(StandardOptions).runner = "FnApiRunner"
    pipeline = beam.Pipeline(options=options)
    _ = (
        pipeline
        | "Patterns" >> beam.Create(list(patterns))
        | "HashFiles" >> HashFiles(export_dir, batch_size, batch_size)
        | "Write" >> beam.io.WriteToParquet(output_prefix, schema, file_name_suffix=".parquet")
    )
    result = pipeline.run()
    result.wait_until_finish()
    counts = {}
    for name in ("encoded_files", "skipped_files"):
        found = result.metrics().query(MetricsFilter().with_namespace(COUNTER_NAMESPACE).with_name(name))["counters"]
        counts[name] = sum(c.committed if c.committed is not None else c.attempted for c in found)
    return {
        "encoded": counts["encoded_files"],
        "skipped": counts["skipped_files"],
        "num_bits": int(info["config"]["num_bits"]),
        "model_version": info["model_fingerprint"],
        "output_prefix": output_prefix,
    }
