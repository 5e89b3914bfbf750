"""The index file: a 64-byte header, then 64-byte-aligned sections that are memory-mapped on load.

Format version 002 (little endian):

    0   8  magic b"CHIDX002"
    8   4  num_bits K (uint32)            12  4  id width: 0, 4 or 8 (uint32)
    16  8  n (uint64)                     24  8  first id, when the id width is 0 (int64)
    32  4  model-version length L (uint32) 36 4  flags: bit 0 = the items have paths (uint32)
    40  8  paths blob length P (uint64)
    48  4  crc32 of header bytes 0-47 and 52-63 (so the section checksums are covered too)
    52  4  crc32 of the version + codes sections   56  4  crc32 of the ids section
    60  4  crc32 of the paths section
    64     model version, utf-8, L bytes             } each part is padded with zeros to a multiple
    ...    codes, n x K/8 bytes, no per-code padding } of 64 bytes (at most 63 bytes per part), and
    ...    ids, n x width bytes (int32/int64)        } the padding is covered by the checksums; the
    ...    path offsets, n + 1 uint64 into the blob   } version and codes share one checksum, the
    ...    paths blob, P bytes of utf-8              } two path parts another

Ids take no space when they are consecutive (id width 0: id = first id + row, e.g. the default
0..n-1), 4 bytes when they fit int32, 8 otherwise. Version 001 files (codes padded to 64-bit
words, int64 ids, no checksum) still load, copied into memory; saving them writes version 002.

Writes go to a temporary file in the same directory that is renamed over the target only once
complete and fsync'ed, so an existing index is never half-overwritten.
"""

import os
import struct
import tempfile
import zlib

import numpy as np

MAGIC = b"CHIDX002"
MAGIC_V1 = b"CHIDX001"
HEADER = struct.Struct("<8sIIQqIIQIIII")
_V1_HEADER = struct.Struct("<8sIIQI36x")
FLAG_PATHS = 1
_CRC_CHUNK = 1 << 26  # verify 64 MB at a time: no full copy of a mapped file in memory
assert HEADER.size == 64


def _pad(nbytes):
    return -nbytes % 64


def _crc(buffer, crc=0):
    view = memoryview(buffer).cast("B")
    for start in range(0, len(view), _CRC_CHUNK):
        crc = zlib.crc32(view[start : start + _CRC_CHUNK], crc)
    return crc


def _header_crc(raw):
    return zlib.crc32(raw[52:64], zlib.crc32(raw[:48]))


class IndexData:
    """What a file holds: codes uint8 [n, K/8], ids (None = consecutive from id_start, or int32 /
    int64 [n]), paths (None or (offsets uint64 [n + 1], blob uint8 [P])), model version."""

    def __init__(self, num_bits, codes, ids, id_start, paths, model_version, legacy=False):
        self.num_bits, self.codes, self.ids, self.id_start = num_bits, codes, ids, id_start
        self.paths, self.model_version = paths, model_version
        self.legacy = legacy  # read from a version 001 file


def save(path, data, _write=None):
    """Write `data` to `path` atomically. `_write` (tests only) replaces the section writer."""
    version = data.model_version.encode("utf-8")
    codes = np.ascontiguousarray(data.codes, np.uint8)
    ids = None if data.ids is None else np.ascontiguousarray(data.ids)
    if ids is not None and (ids.dtype not in (np.int32, np.int64) or ids.shape != (len(codes),)):
        raise ValueError(f"ids must be int32 or int64 [{len(codes)}], got {ids.dtype} {ids.shape}")
    offsets, blob = data.paths if data.paths is not None else (None, None)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".idx.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"\0" * HEADER.size)
            groups = [[version, codes], [] if ids is None else [ids], [] if offsets is None else [offsets, blob]]
            crcs = (_write or _write_parts)(fh, groups)
            raw = bytearray(
                HEADER.pack(
                    MAGIC, data.num_bits, 0 if ids is None else ids.dtype.itemsize, len(codes), int(data.id_start),
                    len(version), FLAG_PATHS if offsets is not None else 0, 0 if blob is None else len(blob), 0, *crcs,
                )
            )  # fmt: skip
            struct.pack_into("<I", raw, 48, _header_crc(raw))
            fh.seek(0)
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _write_parts(fh, groups):
    """Each part zero-padded to 64 bytes; returns one crc32 per group of parts."""
    crcs = []
    for parts in groups:
        crc = 0
        for part in parts:
            view = memoryview(
                np.ascontiguousarray(part).reshape(-1).view(np.uint8) if isinstance(part, np.ndarray) else part
            )
            pad = b"\0" * _pad(view.nbytes)
            fh.write(view)
            fh.write(pad)
            crc = zlib.crc32(pad, _crc(view, crc))
        crcs.append(crc)
    return crcs


def load(path, mmap=True, verify=True):
    """Read an index file -> IndexData, arrays memory-mapped read-only unless mmap=False.
    verify: check the crc32 of every section (about 4 ms per 1M 64-bit codes); the header's own
    checksum is always checked."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no index file at {path}")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory, not an index file")
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        raw = fh.read(HEADER.size)
    if raw[:8] == MAGIC_V1:
        return _load_v1(path, size)
    if len(raw) < 8 or raw[:5] != MAGIC[:5]:
        raise ValueError(f"{path} is not a coophash index file (bad magic)")
    if raw[:8] != MAGIC:
        raise ValueError(
            f"{path} is index format {raw[5:8].decode('ascii', 'replace')!r}; this version of coophash reads 001 and "
            "002: rebuild the index with this version"
        )
    if len(raw) < HEADER.size:
        raise ValueError(f"{path} is truncated: {size} bytes, shorter than the 64-byte header")
    _, num_bits, width, n, id_start, vlen, flags, plen, hcrc, ccrc, icrc, pcrc = HEADER.unpack(raw)
    if hcrc != _header_crc(raw):
        raise ValueError(f"{path} is corrupted: its header does not match its checksum; rebuild the index")
    if num_bits == 0 or num_bits % 8 or width not in (0, 4, 8):
        raise ValueError(f"{path} has an inconsistent header (num_bits {num_bits}, id width {width})")
    nbytes = num_bits // 8
    has_paths = bool(flags & FLAG_PATHS)
    vsize = HEADER.size + vlen + _pad(vlen)  # offset where the codes start

    def padded(nbytes):
        return nbytes + _pad(nbytes)

    csize = padded(n * nbytes)
    isize = padded(n * width)
    psize = padded((n + 1) * 8) + padded(plen) if has_paths else 0
    expected = vsize + csize + isize + psize
    if size != expected:
        raise ValueError(f"{path} is truncated or corrupted: {size} bytes, its header implies {expected}")
    whole = np.memmap(path, np.uint8, "r")
    if verify:
        regions = [("codes", HEADER.size, vsize - HEADER.size + csize, ccrc), ("ids", vsize + csize, isize, icrc)]
        regions.append(("paths", vsize + csize + isize, psize, pcrc))
        for what, start, length, stored in regions:
            computed = _crc(whole[start : start + length]) if length else 0
            if computed != stored:
                raise ValueError(
                    f"{path} is corrupted: its {what} do not match their checksum (stored {stored:08x}, computed "
                    f"{computed:08x}); rebuild the index or restore it from a copy"
                )
    version = bytes(whole[HEADER.size : HEADER.size + vlen]).decode("utf-8", "replace")

    def section(offset, dtype, count, shape=None):
        arr = whole[offset : offset + count * np.dtype(dtype).itemsize].view(dtype)
        arr = arr.reshape(shape) if shape else arr
        return arr if mmap else np.array(arr)

    codes = section(vsize, np.uint8, n * nbytes, (n, nbytes))
    ids = section(vsize + csize, np.int32 if width == 4 else np.int64, n) if width else None
    paths = None
    if has_paths:
        at = vsize + csize + isize
        paths = (section(at, np.uint64, n + 1), section(at + padded((n + 1) * 8), np.uint8, plen))
        if len(paths[0]) and (int(paths[0][-1]) != plen or int(paths[0][0]) != 0):
            raise ValueError(f"{path} is corrupted: its path offsets do not match the paths blob")
    if not mmap:
        del whole
    return IndexData(num_bits, codes, ids, id_start, paths, version)


def _load_v1(path, size):
    """Format 001: 64-bit words per code and int64 ids, no checksum; converted in memory."""
    with open(path, "rb") as fh:
        raw = fh.read(_V1_HEADER.size)
        if len(raw) < _V1_HEADER.size:
            raise ValueError(f"{path} is truncated: {size} bytes, shorter than the 64-byte header")
        _, num_bits, words, n, vlen = _V1_HEADER.unpack(raw)
        if num_bits == 0 or num_bits % 8 or words != (num_bits + 63) // 64:
            raise ValueError(f"{path} has an inconsistent header (num_bits {num_bits}, words {words})")
        offset = _V1_HEADER.size + vlen + _pad(vlen)
        expected = offset + n * words * 8 + n * 8
        if size != expected:
            raise ValueError(f"{path} is truncated or corrupted: {size} bytes, its header implies {expected}")
        version = fh.read(vlen).decode("utf-8", "replace")
        fh.seek(offset)
        codes = np.frombuffer(fh.read(n * words * 8), np.uint8).reshape(n, words * 8)[:, : num_bits // 8].copy()
        ids = np.frombuffer(fh.read(n * 8), np.int64).copy()
    return IndexData(num_bits, codes, ids, 0, None, version, legacy=True)
