"""Codes files: packed codes with their file paths, in Parquet, written batch by batch and read
anywhere (`coophash encode --out`, the Beam pipeline's shards; `coophash index build --from-shards`
reads them back). The one writer and reader of the format:

    column `path`   string                  the file path or URI as given (or as Beam matched it)
    column `code`   fixed_size_binary(K/8)  the packed code, coophash_keras.codes.pack_codes order
                                            (bit 1 = +1, most significant bit first)
    metadata        coophash.format = "codes-1", coophash.num_bits = K (decimal),
                    coophash.model_version = coophash_keras.io.model_fingerprint of the model.keras
                    (the string `index build` stores; an export carries it as model_fingerprint)

One row group per written batch. A file is written to a temporary name and renamed when closed, so
a codes file that exists is complete.

Example:
    with CodesWriter("codes.parquet", 64, fingerprint) as out:
        out.write(paths, packed)            # any number of times
    for paths, packed in read_codes(["codes.parquet"]).batches(): ...
"""

import glob
import os

import numpy as np

FORMAT = "codes-1"
KEYS = ("coophash.format", "coophash.num_bits", "coophash.model_version")


class CodesFileError(ValueError):
    """A codes file (or set of shards) that cannot be read as one; the message names it."""


def _schema(num_bits, model_version):
    import pyarrow as pa

    metadata = {
        "coophash.format": FORMAT,
        "coophash.num_bits": str(int(num_bits)),
        "coophash.model_version": model_version,
    }
    fields = [pa.field("path", pa.string()), pa.field("code", pa.binary(int(num_bits) // 8))]
    return pa.schema(fields, metadata=metadata)


class CodesWriter:
    """Streams (paths, packed codes uint8 [n, K/8]) batches into one Parquet codes file."""

    def __init__(self, path, num_bits, model_version):
        import pyarrow.parquet as pq

        if int(num_bits) <= 0 or int(num_bits) % 8:
            raise ValueError(f"num_bits must be a positive multiple of 8, got {num_bits}")
        self.path, self.num_bits, self.count = path, int(num_bits), 0
        self.schema = _schema(num_bits, model_version)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self.tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp")
        self.writer = pq.ParquetWriter(self.tmp, self.schema)

    def write(self, paths, packed):
        import pyarrow as pa

        packed = np.ascontiguousarray(packed, np.uint8)
        width = self.num_bits // 8
        if packed.ndim != 2 or packed.shape[1] != width or len(packed) != len(paths):
            raise ValueError(f"need {len(paths)} packed codes of {width} bytes, got shape {packed.shape}")
        if not len(paths):
            return
        codes = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(width), len(packed), [None, pa.py_buffer(packed.tobytes())]
        )
        table = pa.Table.from_arrays([pa.array([str(p) for p in paths], pa.string()), codes], schema=self.schema)
        self.writer.write_table(table)
        self.count += len(packed)

    def close(self):
        """Finish the file and move it to its name (complete, or not there at all)."""
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self):
        self.writer.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        self.close() if kind is None else self.abort()


class CodesFiles:
    """Shards read as one: sorted file order, then row order. They must agree on num_bits and the
    model version. `batches()` yields (paths list, packed uint8 [n, K/8]) per row group."""

    def __init__(self, files):
        import pyarrow.parquet as pq

        if not files:
            raise CodesFileError("no codes files given")
        self.files, self.num_bits, self.model_version, self.num_rows = list(files), None, None, 0
        for path in self.files:
            try:
                meta = pq.read_metadata(path)
            except Exception as exc:  # pyarrow raises several kinds for a file that is not Parquet
                raise CodesFileError(f"{path} is not a readable Parquet codes file: {exc}") from None
            kv = {k.decode(): v.decode() for k, v in (meta.metadata or {}).items()}
            if kv.get("coophash.format") != FORMAT or "coophash.num_bits" not in kv:
                raise CodesFileError(f"{path} is not a coophash codes file (no coophash.format = {FORMAT!r})")
            names = meta.schema.to_arrow_schema().names
            if "path" not in names or "code" not in names:
                raise CodesFileError(f"{path} lacks the columns path and code (has {names})")
            bits, version = int(kv["coophash.num_bits"]), kv.get("coophash.model_version", "")
            if self.num_bits is None:
                self.num_bits, self.model_version = bits, version
            elif (bits, version) != (self.num_bits, self.model_version):
                raise CodesFileError(
                    f"{path} holds {bits}-bit codes of model {version!r}, {self.files[0]} {self.num_bits}-bit codes "
                    f"of model {self.model_version!r}: shards must come from one model"
                )
            self.num_rows += meta.num_rows

    def batches(self):
        import pyarrow.parquet as pq

        width = self.num_bits // 8
        for path in self.files:
            reader = pq.ParquetFile(path)
            for group in range(reader.num_row_groups):
                table = reader.read_row_group(group, columns=["path", "code"])
                code = table.column("code").combine_chunks()
                if code.type.byte_width != width:
                    raise CodesFileError(f"{path}: codes of {code.type.byte_width} bytes, not {width}")
                buffer = code.buffers()[1]
                packed = np.frombuffer(buffer, np.uint8)[code.offset * width : (code.offset + len(code)) * width]
                yield table.column("path").to_pylist(), packed.reshape(len(code), width).copy()


def read_codes(pattern):
    """CodesFiles of a glob pattern (or a list of files), in sorted file order."""
    files = sorted(glob.glob(pattern)) if isinstance(pattern, str) else sorted(pattern)
    if not files:
        raise CodesFileError(f"no codes files match {pattern}")
    return CodesFiles(files)
