"""Image sets from your own files: a folder of class subfolders, a CSV of file names and labels
(multi-label), or a folder of unlabelled images.

    folder:PATH   PATH/<class>/<image> (images in folders nested inside a class folder count too):
                  one subfolder per class; class ids follow the sorted subfolder names, and items
                  come class by class in the order of keras.utils.image_dataset_from_directory
                  (shuffle=False) - the same class ids and order (tests/test_files.py checks it).
    csv:PATH      a header row naming the columns `file` and `labels` (others are ignored); `file` is
                  relative to the CSV's folder, `labels` holds one or more label strings separated by
                  ';'. Labels become multi-hot rows; class names are the sorted set of label strings
                  of the images read (so class ids follow the sorted strings).
    images:PATH   every image under PATH (subfolders included), no labels: labels are all -1
                  (UNLABELED) and num_classes is 0, so the rest of the package sees an ordinary
                  ImageSet. For an index database or an unlabelled pool; a retrieval split (so
                  training) refuses it with a message.

Every set carries extras["paths"]: each item's file path (PATH as given, joined with the file's
place under it), so an index built from it can name its items.

Nothing is decoded here: a loaded set is a table of file rows (ImageSet with `images` None, its
`shape` the H x W x C to decode to), and the one tf.data pipeline (ImageSet.as_dataset) decodes
them batch by batch, so only paths, labels and codes are held, whatever the number of files.

We decode with PIL rather than through image_dataset_from_directory so that a bad file is skipped
and named instead of failing inside TensorFlow mid-epoch, and so that the default size can be the
first image's. Each image is turned upright by its EXIF orientation, converted to 1 (greyscale) or
3 (RGB; alpha is dropped) channels, then resized (bilinear) to H x W without keeping the aspect
ratio. `decode_image` is the one function for this, used for the data and for query images on the
command line alike, so a file gives the same pixels at index and at query time.
Defaults: H x W = the size of the first image (in the order above); channels = the majority among
the images (ties: 3); finding them reads every file's header (not its pixels). Images of another
size or channel count are converted, with a warning when the headers were read.

Bad input, the policy. A problem with one file is skipped with a warning (one line naming the
files and reasons), since one broken download should not stop a run over thousands of photos; a
problem with the layout means the data is not what was meant, so it is an error before training:
    skipped, with a warning:  non-image files (by extension in a folder), files a CSV names that do
                              not exist, files at the top of a class-folder dataset (outside any
                              class folder): at loading, one line;
                              unreadable, truncated or empty image files: they stay rows (so a
                              split's row indices do not depend on how the set was loaded) and are
                              skipped when the pipeline decodes them, each named in one line, and a
                              pass that encodes the set gives their count at the end;
    error:                    a missing path, no readable images at all, a folder with one class or
                              with no class subfolders, a class folder left without readable images
                              (these two when the headers are read, i.e. without a given size and
                              channels; otherwise when a pass finds no file it can decode),
                              a CSV without the file/labels header, a malformed row (wrong number
                              of fields, no file name, no labels), a file listed twice, only one
                              distinct label.
Names starting with '.' (.DS_Store, .git/) and Thumbs.db / desktop.ini are ignored silently."""

import csv
import dataclasses
import hashlib
import io
import os
import sys

import numpy as np

from coophash_keras.data.image_set import ImageSet

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
IGNORED_FILES = ("thumbs.db", "desktop.ini")
UNLABELED = -1  # the label of every image of an images:PATH set
FILE_DATASETS = ("folder:", "csv:", "images:")
_LISTED_IN_WARNINGS = 5  # name this many skipped files in a warning, then count the rest
_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class ImageFileError(ValueError):
    """A file-based dataset cannot be used as given; the message names the file and the problem."""


def is_file_dataset(name):
    return isinstance(name, str) and name.startswith(FILE_DATASETS)


def print_warning(message):
    """The default `warn`: one line on stderr (Python's warnings are hidden by the CLI)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def parse_image_size(value):
    """'H,W', 'N' (square), an int or a pair -> (H, W), both > 0; None stays None."""
    if value is None:
        return None
    try:
        if isinstance(value, str):
            parts = [int(p) for p in value.replace("x", ",").split(",")]
        elif isinstance(value, (int, np.integer)):
            parts = [int(value)]
        else:
            parts = [int(p) for p in value]
    except (TypeError, ValueError):
        raise ImageFileError(f"image size must be H,W (e.g. 64,64), got {value!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise ImageFileError(f"image size must be two integers > 0 as H,W, got {value!r}")
    return tuple(parts)


def _check_channels(channels):
    if channels is not None and channels not in (1, 3):
        raise ImageFileError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels!r}")
    return channels


# ---------------------------------------------------------------------------- one image


class BadImage(Exception):
    """An image file that cannot be used; str() is the short reason shown to the user."""


def _reason(exc, path):
    """A short reason for a PIL/OS error (the file is named by the caller, so not repeated here)."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "unrecognised image data"
    text = (str(exc) or type(exc).__name__).replace(repr(path), "").replace(path, "")
    if "truncat" in text.lower():
        return "truncated"
    return text.split("\n")[0].strip(" :")[:80]


def _upright_size(img):
    """(width, height) after the EXIF orientation is applied (5-8 swap the sides)."""
    try:
        orientation = img.getexif().get(0x0112)
    except Exception:  # a broken EXIF block: the pixels may still be fine
        orientation = None
    return img.size[::-1] if orientation in (5, 6, 7, 8) else img.size


def probe_image(path):
    """(channels 1|3, (height, width)) from the file's header, without decoding the pixels."""
    from PIL import Image

    try:
        if os.path.getsize(path) == 0:
            raise BadImage("empty file")
        with Image.open(path) as img:
            w, h = _upright_size(img)
            return (1 if img.mode in _GREY_MODES else 3), (h, w)
    except BadImage:
        raise
    except Exception as exc:  # PIL raises many kinds; each is one bad file
        raise BadImage(_reason(exc, path)) from None


def open_image(path):
    """The fully decoded, upright PIL image of `path`, or BadImage. verify() checks the file's
    structure (PNG checksums), load() decodes every pixel (finds truncated JPEGs)."""
    from PIL import Image, ImageOps

    try:
        with open(path, "rb") as fh:
            data = fh.read()
        if not data:
            raise BadImage("empty file")
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
        img = Image.open(io.BytesIO(data))
        img.load()
        return ImageOps.exif_transpose(img)
    except BadImage:
        raise
    except Exception as exc:
        raise BadImage(_reason(exc, path)) from None


def to_array(img, size, channels):
    """A PIL image -> uint8 [H, W, channels]: convert (16-bit greyscale scaled, not clipped), then
    resize bilinearly to size = (H, W) unless it already has it."""
    from PIL import Image

    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # 16-bit / float greyscale
        arr = np.asarray(img, dtype=np.float64)
        if arr.max(initial=0) > 255:
            arr = arr / 257.0  # 0..65535 -> 0..255
        img = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8))
    img = img.convert("L" if channels == 1 else "RGB")
    h, w = size
    if img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def decode_image(path, size, channels):
    """uint8 [H, W, channels] pixels of an image file (BadImage if it cannot be read)."""
    return to_array(open_image(path), size, channels)


# ---------------------------------------------------------------------------- many images


@dataclasses.dataclass
class _Candidate:
    path: str  # as opened (and kept in extras["paths"])
    name: str  # as shown in messages: relative to the dataset's folder


def _ignored(name):
    return name.startswith(".") or name.lower() in IGNORED_FILES


def _is_image_name(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _walk(root):
    """Relative paths of the files under root (not ignored; hidden folders pruned): a folder's own
    files in sorted order, then its subfolders', in sorted order - the order of
    keras.utils.image_dataset_from_directory(shuffle=False)."""
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(folder, root)
        out.extend(os.path.normpath(os.path.join(rel, f)) for f in sorted(files) if not _ignored(f))
    return out


def _listing(skipped):
    """'a.jpg (truncated), b.txt (not an image file) and 3 more'."""
    shown = ", ".join(f"{name} ({reason})" for name, reason in skipped[:_LISTED_IN_WARNINGS])
    more = len(skipped) - _LISTED_IN_WARNINGS
    return shown + (f" and {more} more" if more > 0 else "")


def _table(candidates, what, image_size, channels, warn, skipped):
    """The rows of a file set: (shape (H, W, C), kept indices into candidates). Nothing is decoded:
    the pipeline decodes (ImageSet.as_dataset), and a file that fails there is skipped and named.
    With both the size and the channels given (e.g. the model's), no file is even opened. Without,
    every header is read (PIL reads a few hundred bytes) for the defaults: the first readable
    image's size and the majority's channels; a file whose header cannot be read stays a row (so
    the row indices of split.npz do not depend on how the set was loaded) and is skipped when the
    pipeline reaches it. Listing-time problems (`skipped`) are reported here, in one line."""
    image_size = parse_image_size(image_size)
    channels = _check_channels(channels)
    total = len(candidates) + len(skipped)
    kept = np.arange(len(candidates), dtype=np.int64)
    if image_size is None or channels is None:
        probed, bad = [], list(skipped)
        for i, c in enumerate(candidates):
            try:
                probed.append((i, *probe_image(c.path)))
            except BadImage as exc:
                bad.append((c.name, str(exc)))
        if not probed:
            raise ImageFileError(f"{what}: no readable images: {_listing(bad)}")
        kept = np.asarray([p[0] for p in probed], np.int64)  # the rows known readable (for the checks)
        grey = sum(p[1] == 1 for p in probed)
        why = f"--channels {channels}"
        if channels is None:
            channels = 1 if grey > len(probed) - grey else 3
            why = "the majority; pass --channels 1 or 3 to choose"
        size_given = image_size is not None
        image_size = image_size or probed[0][2]
        converted = sum(p[1] != channels for p in probed)
        resized = sum(p[2] != image_size for p in probed)
        if converted:
            kind = "RGB" if channels == 1 else "greyscale"
            warn(f"{what}: converted {converted} {kind} image(s) to {'greyscale' if channels == 1 else 'RGB'} ({why})")
        if resized and not size_given:
            warn(
                f"{what}: resized {resized} of {len(probed)} images to {image_size[0]}x{image_size[1]}, the size of "
                f"the first image ({candidates[probed[0][0]].name}); pass --image-size H,W to choose"
            )
    if skipped:
        warn(f"{what}: skipped {len(skipped)} of {total} files: {_listing(skipped)}")
    return (*image_size, channels), kept


def _paths(candidates):
    return np.asarray([c.path for c in candidates], dtype=str)


def _require_dir(root, what):
    if not os.path.exists(root):
        raise ImageFileError(f"{what}: no such folder {root}")
    if not os.path.isdir(root):
        raise ImageFileError(f"{what}: {root} is not a folder")


# ---------------------------------------------------------------------------- the three loaders


def load_image_folder(root, image_size=None, channels=None, warn=print_warning):
    """folder:PATH, one subfolder per class (nested folders inside a class folder are included):
    single-label ImageSet, class ids in sorted subfolder-name order."""
    what = f"folder:{root}"
    _require_dir(root, what)
    entries = sorted(e for e in os.listdir(root) if not _ignored(e))
    class_names = [e for e in entries if os.path.isdir(os.path.join(root, e))]
    top_files = [e for e in entries if not os.path.isdir(os.path.join(root, e))]
    if not class_names:
        if any(_is_image_name(f) for f in top_files):
            raise ImageFileError(
                f"{what}: the images are not in class subfolders; put each class in its own subfolder "
                f"(PATH/<class>/<image>), or use images:{root} for unlabelled images"
            )
        raise ImageFileError(f"{what}: no class subfolders and no images")
    if len(class_names) == 1:
        raise ImageFileError(
            f"{what}: only one class subfolder ({class_names[0]}); hashing by class needs at least two "
            f"(use images:{root} for unlabelled images)"
        )
    skipped = [(f, "not in a class folder") for f in top_files]
    candidates, class_of = [], []
    for k, cls in enumerate(class_names):
        for rel in _walk(os.path.join(root, cls)):
            name = os.path.join(cls, rel)
            if _is_image_name(rel):
                candidates.append(_Candidate(os.path.join(root, name), name))
                class_of.append(k)
            else:
                skipped.append((name, "not an image file"))
    if not candidates:
        raise ImageFileError(f"{what}: no images in the class subfolders ({', '.join(class_names)})")
    shape, readable = _table(candidates, what, image_size, channels, warn, skipped)
    labels = np.asarray(class_of, np.int64)
    empty = [name for k, name in enumerate(class_names) if not np.any(labels[readable] == k)]
    if empty:
        raise ImageFileError(
            f"{what}: class folder(s) without readable images: {', '.join(empty)}; add images or remove the folder"
        )
    paths = {"paths": _paths(candidates)}
    return ImageSet(None, labels, len(class_names), False, class_names, what, paths, shape, warn)


def _read_csv_rows(csv_path, what):
    """[(line number, file, sorted label strings)] from a file,labels CSV, or ImageFileError."""
    if not os.path.isfile(csv_path):
        raise ImageFileError(f"{what}: no such file {csv_path}")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:  # -sig: a spreadsheet's BOM
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise ImageFileError(f"{what}: empty file (expected a header row: file,labels)")
            columns = [h.strip().lower() for h in header]
            if "file" not in columns or "labels" not in columns:
                raise ImageFileError(
                    f"{what}: the header row must name the columns file and labels, got {','.join(header)!r}"
                )
            fi, li = columns.index("file"), columns.index("labels")
            rows, first_line = [], {}
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue  # blank line
                if len(row) != len(columns):
                    hint = " (separate labels with ';', not ',')" if len(row) > len(columns) else ""
                    raise ImageFileError(
                        f"{what} line {line}: expected {len(columns)} fields ({','.join(columns)}), "
                        f"got {len(row)}: {','.join(row)!r}{hint}"
                    )
                name = row[fi].strip()
                labels = sorted({s.strip() for s in row[li].split(";") if s.strip()})
                if not name:
                    raise ImageFileError(f"{what} line {line}: no file name")
                if not labels:
                    raise ImageFileError(
                        f"{what} line {line}: no labels for {name} (put unlabelled images in an images: folder)"
                    )
                if name in first_line:
                    raise ImageFileError(
                        f"{what} line {line}: {name} is listed again (first on line {first_line[name]})"
                    )
                first_line[name] = line
                rows.append((line, name, labels))
    except UnicodeDecodeError:
        raise ImageFileError(f"{what}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise ImageFileError(f"{what}: not a readable CSV file: {exc}") from None
    if not rows:
        raise ImageFileError(f"{what}: no rows after the header")
    return rows


def load_image_csv(csv_path, image_size=None, channels=None, warn=print_warning):
    """csv:PATH (file,labels with ';'-separated labels): multi-label ImageSet with multi-hot
    float32 labels over the sorted label strings of the images that could be read."""
    what = f"csv:{csv_path}"
    rows = _read_csv_rows(csv_path, what)
    base = os.path.dirname(csv_path)
    candidates, labels_of, skipped = [], [], []
    for _, name, labels in rows:
        path = os.path.normpath(os.path.join(base, name))
        if not os.path.isfile(path):
            skipped.append((name, "missing"))
            continue
        candidates.append(_Candidate(path, name))
        labels_of.append(labels)
    if not candidates:
        raise ImageFileError(
            f"{what}: none of the {len(rows)} files it lists exists (paths are relative to {base or '.'})"
        )
    shape, _ = _table(candidates, what, image_size, channels, warn, skipped)
    class_names = sorted({lab for labels in labels_of for lab in labels})
    if len(class_names) < 2:
        raise ImageFileError(f"{what}: only one distinct label ({class_names[0]}); hashing by class needs at least two")
    column = {name: k for k, name in enumerate(class_names)}
    multi_hot = np.zeros((len(candidates), len(class_names)), np.float32)
    for row, labels in enumerate(labels_of):
        multi_hot[row, [column[lab] for lab in labels]] = 1
    paths = {"paths": _paths(candidates)}
    return ImageSet(None, multi_hot, len(class_names), True, class_names, what, paths, shape, warn)


def load_image_files(root, image_size=None, channels=None, warn=print_warning):
    """images:PATH, every image under PATH (subfolders included), unlabelled: labels all
    UNLABELED (-1), num_classes 0. Use it as an index database or an unlabelled pool."""
    what = f"images:{root}"
    _require_dir(root, what)
    candidates, skipped = [], []
    for rel in _walk(root):
        if _is_image_name(rel):
            candidates.append(_Candidate(os.path.join(root, rel), rel))
        else:
            skipped.append((rel, "not an image file"))
    if not candidates:
        raise ImageFileError(f"{what}: no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
    shape, _ = _table(candidates, what, image_size, channels, warn, skipped)
    labels = np.full(len(candidates), UNLABELED, np.int64)
    return ImageSet(None, labels, 0, False, [], what, {"paths": _paths(candidates)}, shape, warn)


def load_file_dataset(name, image_size=None, channels=None, warn=print_warning):
    """Dispatch 'folder:PATH', 'csv:PATH' or 'images:PATH'."""
    kind, _, path = name.partition(":")
    if not path:
        raise ImageFileError(f"{name!r} names no path: use {kind}:PATH")
    loader = {"folder": load_image_folder, "csv": load_image_csv, "images": load_image_files}[kind]
    return loader(path, image_size=image_size, channels=channels, warn=warn)


# ---------------------------------------------------------------------------- re-loading a run's data


def dataset_record(data):
    """What a run directory keeps about a file-based set to re-load exactly the same items later:
    the image size and channels it was decoded to, the item count and a fingerprint of the paths
    and labels (split.npz holds indices into this list). {} for other sets."""
    paths = data.extras.get("paths") if hasattr(data, "extras") else None
    if paths is None:
        return {}
    h, w, c = data.image_shape
    return {
        "image_size": [int(h), int(w)],
        "channels": int(c),
        "num_images": len(data),
        "fingerprint": fingerprint(data),
    }


def fingerprint(data):
    digest = hashlib.sha256()
    for path in data.extras["paths"]:
        digest.update(str(path).encode("utf-8") + b"\0")
    digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()[:16]


def check_dataset_record(record, data):
    """Raise ImageFileError if `data` is not the set `record` (from dataset_record) describes."""
    if "fingerprint" not in record:
        return
    if len(data) != record.get("num_images") or fingerprint(data) != record["fingerprint"]:
        raise ImageFileError(
            f"{data.name} has changed since the run was trained ({record.get('num_images')} images then, "
            f"{len(data)} now, or other files or labels): the run's split would point at other images; "
            "restore the files or train again"
        )
