"""Datasets from image files (folder:, csv:, images:), their bad-input policy, the contact sheet,
`coophash search`, and a CLI round trip on a folder of PNGs. Everything is written in tmp_path."""

import importlib.util
import json
import os

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from coophash_keras.data import ImageFileError, load_dataset, load_image_csv, load_image_files, load_image_folder
from coophash_keras.data import files as files_mod

CLASSES = ("dog", "cat", "bird")  # sorted: bird, cat, dog
PER_CLASS = 8
SMALL = ["--set", "base_filters=8", "--set", "feature_dim=32", "--set", "latent_dim=8"]
SMALL += ["--set", "generator_filters=16", "--set", "langevin_steps=2"]


def png(path, size=(8, 8), channels=1, value=None, seed=0):
    """Write a small PNG (random pixels unless `value`), making its folder."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shape = size if channels == 1 else (*size, channels)
    rng = np.random.default_rng(seed)
    arr = np.full(shape, value, np.uint8) if value is not None else rng.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def truncated(path, fmt="PNG"):
    """A valid image file cut in half."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = str(path) + ".full"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp, format=fmt)
    data = open(tmp, "rb").read()
    os.remove(tmp)
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 2])
    return path


@pytest.fixture
def class_folder(tmp_path):
    """tmp/classes/<dog|cat|bird>/<i>.png: 8 greyscale 8x8 images per class; class k has mean 60 + 60k
    (bird darkest) plus noise, so a model can tell them apart a little."""
    root = tmp_path / "classes"
    for k, cls in enumerate(sorted(CLASSES)):
        for i in range(PER_CLASS):
            rng = np.random.default_rng(100 * k + i)
            arr = np.clip(60 + 60 * k + rng.normal(0, 20, (8, 8)), 0, 255).astype(np.uint8)
            os.makedirs(root / cls, exist_ok=True)
            Image.fromarray(arr).save(root / cls / f"{i:02d}.png")
    return root


def load(loader, path, **kwargs):
    """Run a loader, returning (ImageSet, warning lines)."""
    messages = []
    return loader(str(path), warn=messages.append, **kwargs), messages


# ---------------------------------------------------------------------------- loading good data


def test_folder_gives_classes_labels_and_paths(class_folder):
    data, messages = load(load_image_folder, class_folder)
    assert messages == []
    assert data.streamed and data.image_shape == (8, 8, 1) and len(data) == 24  # rows are files, decoded when read
    pixels = data.pixels()
    assert pixels.shape == (24, 8, 8, 1) and pixels.dtype == np.uint8
    assert data.class_names == ["bird", "cat", "dog"] and data.num_classes == 3 and not data.multi_label
    assert data.labels.dtype == np.int64 and data.labels.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    paths = data.extras["paths"]
    assert paths.dtype.kind == "U" and len(paths) == 24
    assert all(os.path.basename(os.path.dirname(p)) == data.class_names[k] for p, k in zip(paths, data.labels))
    np.testing.assert_array_equal(pixels[0, ..., 0], np.asarray(Image.open(paths[0])))
    sub = data.subset([3, 20])  # extras follow subsets
    assert sub.extras["paths"].tolist() == [paths[3], paths[20]]


def test_folder_order_matches_keras_image_dataset_from_directory(tmp_path):
    import keras

    root = tmp_path / "k"
    for cls in ("dog", "Cat", "bird"):
        for name in ("b.png", "a.png", "B.png", "sub/c.png", "z.png"):
            png(str(root / cls / name))
    ds = keras.utils.image_dataset_from_directory(
        str(root), image_size=(8, 8), color_mode="grayscale", shuffle=False, batch_size=None, verbose=False
    )
    data, _ = load(load_image_folder, root)
    assert data.class_names == ds.class_names == ["Cat", "bird", "dog"]
    assert [os.path.relpath(p, root) for p in data.extras["paths"]] == [os.path.relpath(p, root) for p in ds.file_paths]


def test_image_size_and_channels_options(class_folder):
    data, messages = load(load_image_folder, class_folder, image_size=(4, 6), channels=3)
    pixels = data.pixels()
    assert pixels.shape == (24, 4, 6, 3)
    assert (pixels[..., 0] == pixels[..., 2]).all()  # grey converted to RGB
    assert messages == []  # size and channels given: no file is opened before the pipeline reads it
    _, messages = load(load_image_folder, class_folder, channels=3)
    assert len(messages) == 1 and "converted 24 greyscale image(s) to RGB (--channels 3)" in messages[0]
    same = load_dataset(f"folder:{class_folder}", image_size="4,6", channels=3)
    np.testing.assert_array_equal(same.pixels(), pixels)


def test_csv_gives_multi_hot_labels(tmp_path):
    for name in ("a.png", "b.png", "c.png", "img/d.png"):
        png(str(tmp_path / "pics" / name))
    csv_path = tmp_path / "pics" / "labels.csv"
    csv_path.write_text(
        "\ufefffile,labels,note\n"  # a spreadsheet's byte-order mark, an extra column
        "a.png,sky;tree,x\n"
        "b.png, water ,y\n"
        "\n"
        'c.png,"tree;sky;tree",z\n'
        "img/d.png,water;sky,\n",
        encoding="utf-8",
    )
    data, messages = load(load_image_csv, csv_path)
    assert messages == []
    assert data.multi_label and data.class_names == ["sky", "tree", "water"] and data.labels.dtype == np.float32
    np.testing.assert_array_equal(data.labels, [[1, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1]])
    assert [os.path.relpath(p, tmp_path / "pics") for p in data.extras["paths"]] == [
        "a.png",
        "b.png",
        "c.png",
        os.path.join("img", "d.png"),
    ]


def test_images_folder_is_unlabelled(tmp_path):
    for name in ("x.png", "nested/y.png", "z.jpg"):
        png(str(tmp_path / "pool" / name), channels=3)
    data, messages = load(load_image_files, tmp_path / "pool")
    assert messages == [] and data.image_shape == (8, 8, 3) and data.pixels().shape == (3, 8, 8, 3)
    assert data.labels.tolist() == [-1, -1, -1] and data.num_classes == 0 and data.class_names == []
    assert [os.path.relpath(p, tmp_path / "pool") for p in data.extras["paths"]] == [
        "x.png",
        "z.jpg",
        os.path.join("nested", "y.png"),
    ]
    from coophash_keras.data import retrieval_split

    with pytest.raises(ValueError, match="needs class labels.*images:PATH"):
        retrieval_split(data.labels, 1)


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    path = str(tmp_path / "deep.png")
    Image.fromarray(np.array([[0, 32896, 65535, 257]], np.uint16)).save(path)
    assert files_mod.decode_image(path, (1, 4), 1)[0, :, 0].tolist() == [0, 128, 255, 1]


def test_exif_orientation_and_other_modes(tmp_path):
    wide = np.zeros((4, 10, 3), np.uint8)
    wide[:, :5] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: "rotate 90 degrees clockwise to view"
    Image.fromarray(wide).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    assert files_mod.probe_image(str(tmp_path / "phone.jpg")) == (3, (10, 4))  # upright: 10 high, 4 wide
    upright = files_mod.decode_image(str(tmp_path / "phone.jpg"), (10, 4), 3)
    assert upright[:4].mean() > 200 and upright[6:].mean() < 50  # the white half is now on top
    Image.fromarray(np.full((8, 8, 4), 200, np.uint8), "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(np.full((8, 8, 2), 90, np.uint8), "LA").save(tmp_path / "grey_alpha.png")
    assert files_mod.probe_image(str(tmp_path / "alpha.png"))[0] == 3
    assert files_mod.probe_image(str(tmp_path / "grey_alpha.png"))[0] == 1
    assert files_mod.decode_image(str(tmp_path / "alpha.png"), (8, 8), 3).shape == (8, 8, 3)


def test_load_dataset_options_apply_to_file_datasets_only():
    with pytest.raises(ValueError, match="apply to folder:, csv: and images:"):
        load_dataset("digits", image_size=(8, 8))
    with pytest.raises(ValueError, match="names no path"):
        load_dataset("folder:")
    assert files_mod.parse_image_size("28") == (28, 28) and files_mod.parse_image_size("32,48") == (32, 48)
    with pytest.raises(ImageFileError, match="H,W"):
        files_mod.parse_image_size("0,4")


# ---------------------------------------------------------------------------- bad input, one test per case


def test_unreadable_and_truncated_files_are_skipped_and_named(class_folder):
    (class_folder / "cat" / "garbage.png").write_bytes(b"not an image at all")
    (class_folder / "cat" / "empty.jpg").write_bytes(b"")
    truncated(class_folder / "dog" / "cut.png")
    truncated(class_folder / "dog" / "cut.jpg", fmt="JPEG")
    data, messages = load(load_image_folder, class_folder)
    assert len(data) == 28 and not any("skipped" in m for m in messages)  # rows: found bad when decoded
    messages.clear()  # (the cut RGB files' header makes a "converted" line)
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in data.as_dataset(8)])
    assert len(np.concatenate(images)) == 24 and len(np.concatenate(labels)) == 24  # skipped, labels with them
    assert len(messages) == 4  # one line per file, naming it
    for part in (
        "cat/garbage.png (unrecognised image data)",
        "cat/empty.jpg (empty file)",
        "dog/cut.png (truncated)",
        "dog/cut.jpg (truncated)",
    ):
        assert sum(part in line for line in messages) == 1
    assert all(line.startswith(f"folder:{class_folder}: skipped ") for line in messages)


def test_non_image_files_are_skipped_and_hidden_files_ignored(class_folder):
    (class_folder / "cat" / "notes.txt").write_text("hello")
    (class_folder / "cat" / ".DS_Store").write_bytes(b"\0\0")
    (class_folder / "README.md").write_text("top-level file")
    data, messages = load(load_image_folder, class_folder)
    assert len(data) == 24 and len(messages) == 1
    assert "skipped 2 of 26 files: README.md (not in a class folder), cat/notes.txt (not an image file)" in messages[0]


def test_many_skipped_files_are_counted_not_all_listed(class_folder):
    for i in range(8):
        (class_folder / "cat" / f"bad{i}.txt").write_bytes(b"x")
    _, messages = load(load_image_folder, class_folder)
    assert "skipped 8 of 32 files:" in messages[0] and messages[0].endswith("and 3 more")


def test_folder_with_one_class_is_an_error(tmp_path):
    png(str(tmp_path / "one" / "cat" / "a.png"))
    with pytest.raises(ImageFileError, match=r"only one class subfolder \(cat\).*images:"):
        load(load_image_folder, tmp_path / "one")


def test_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageFileError, match="no class subfolders and no images"):
        load(load_image_folder, tmp_path / "empty")
    for cls in ("a", "b"):
        (tmp_path / "texts" / cls).mkdir(parents=True)
        (tmp_path / "texts" / cls / "x.txt").write_text("x")
    with pytest.raises(ImageFileError, match=r"no images in the class subfolders \(a, b\)"):
        load(load_image_folder, tmp_path / "texts")
    with pytest.raises(ImageFileError, match="no images"):
        load(load_image_files, tmp_path / "empty")
    with pytest.raises(ImageFileError, match="no such folder"):
        load(load_image_folder, tmp_path / "nowhere")


def test_images_without_class_subfolders_point_to_images_prefix(tmp_path):
    png(str(tmp_path / "flat" / "a.png"))
    with pytest.raises(ImageFileError, match=r"not in class subfolders.*images:"):
        load(load_image_folder, tmp_path / "flat")


def test_only_broken_files_is_an_error(class_folder, tmp_path):
    for f in (class_folder / "cat").iterdir():
        f.write_bytes(b"broken")
    with pytest.raises(ImageFileError, match="class folder.* without readable images: cat"):
        load(load_image_folder, class_folder)
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "a.png").write_bytes(b"broken")
    with pytest.raises(ImageFileError, match=r"no readable images: a.png \(unrecognised image data\)"):
        load(load_image_files, tmp_path / "pool")


def test_csv_naming_missing_files_skips_them(tmp_path):
    for name in ("a.png", "b.png"):
        png(str(tmp_path / name))
    (tmp_path / "l.csv").write_text("file,labels\na.png,x\nb.png,y\ngone.png,x\nalso/gone.png,y\n")
    data, messages = load(load_image_csv, tmp_path / "l.csv")
    assert len(data) == 2 and len(messages) == 1
    assert "skipped 2 of 4 files: gone.png (missing), also/gone.png (missing)" in messages[0]
    (tmp_path / "none.csv").write_text("file,labels\ngone.png,x\n")
    with pytest.raises(ImageFileError, match="none of the 1 files it lists exists"):
        load(load_image_csv, tmp_path / "none.csv")


@pytest.mark.parametrize(
    "text,match",
    [
        ("file,labels\na.png,x;y\nb.png,x,y\n", r"line 3: expected 2 fields \(file,labels\), got 3.*separate labels"),
        ("file,labels\na.png,x\nb.png\n", r"line 3: expected 2 fields \(file,labels\), got 1"),
        ("file,labels\na.png,x\n,y\n", "line 3: no file name"),
        ("file,labels\na.png,x\nb.png, ; \n", "line 3: no labels for b.png"),
        ("file,labels\na.png,x\na.png,y\n", r"line 3: a.png is listed again \(first on line 2\)"),
        ("path,tags\na.png,x\n", "header row must name the columns file and labels"),
        ("", "empty file"),
        ("file,labels\n", "no rows after the header"),
        ("file,labels\na.png,x\nb.png,x\n", r"only one distinct label \(x\)"),
    ],
)
def test_malformed_csv_is_an_error_naming_the_line(tmp_path, text, match):
    for name in ("a.png", "b.png"):
        png(str(tmp_path / name))
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(ImageFileError, match=match):
        load(load_image_csv, tmp_path / "l.csv")


def test_mixed_channel_counts_go_to_the_majority_or_to_channels(tmp_path):
    root = tmp_path / "mixed"
    for i in range(3):
        png(str(root / "a" / f"g{i}.png"), seed=i)
    png(str(root / "b" / "g.png"))
    png(str(root / "b" / "rgb.png"), channels=3)
    data, messages = load(load_image_folder, root)
    assert data.image_shape == (8, 8, 1) and data.pixels().shape == (5, 8, 8, 1)
    assert messages == [
        f"folder:{root}: converted 1 RGB image(s) to greyscale (the majority; pass --channels 1 or 3 to choose)"
    ]
    data, messages = load(load_image_folder, root, channels=3)
    assert data.pixels().shape == (5, 8, 8, 3) and "converted 4 greyscale image(s) to RGB (--channels 3)" in messages[0]


def test_mixed_sizes_are_resized_to_the_first_image(tmp_path):
    root = tmp_path / "sizes"
    png(str(root / "a" / "0.png"), size=(10, 12))
    png(str(root / "a" / "1.png"), size=(20, 20))
    png(str(root / "b" / "0.png"), size=(10, 12))
    data, messages = load(load_image_folder, root)
    assert data.image_shape == (10, 12, 1)
    assert messages == [
        f"folder:{root}: resized 1 of 3 images to 10x12, the size of the first image (a/0.png); "
        "pass --image-size H,W to choose"
    ]
    _, messages = load(load_image_folder, root, image_size=(6, 6))
    assert messages == []  # asked for: no warning


def test_more_pixels_than_memory_is_no_longer_refused(class_folder):
    data, _ = load(load_image_folder, class_folder, image_size=(30000, 30000), channels=3)  # 65 GB of pixels
    assert len(data) == 24 and data.image_shape == (30000, 30000, 3) and not hasattr(files_mod, "MAX_DATASET_BYTES")


def test_changed_files_are_caught_when_a_run_reloads_them(class_folder):
    data, _ = load(load_image_folder, class_folder)
    record = files_mod.dataset_record(data)
    assert record["image_size"] == [8, 8] and record["channels"] == 1 and record["num_images"] == 24
    files_mod.check_dataset_record(record, data)  # unchanged: fine
    png(str(class_folder / "cat" / "new.png"))
    again, _ = load(load_image_folder, class_folder)
    with pytest.raises(ImageFileError, match="has changed since the run was trained"):
        files_mod.check_dataset_record(record, again)
    assert files_mod.dataset_record(load_dataset("digits")) == {}


# ---------------------------------------------------------------------------- contact sheet, search helpers


def test_contact_sheet_renders_rows_of_thumbnails(tmp_path):
    from coophash_keras.contact_sheet import render_contact_sheet, save_contact_sheet, thumbnail

    assert thumbnail(np.zeros((28, 28, 1), np.uint8), 84).size == (84, 84)  # 3x nearest-neighbour
    assert thumbnail(np.zeros((300, 150, 3), np.uint8), 84).size == (42, 84)  # shrunk, aspect kept
    queries = np.zeros((2, 28, 28, 1), np.uint8)
    neighbours = [[np.full((28, 28, 1), 255, np.uint8)] * 4, [None] * 4]  # None: a file that has gone
    sheet = render_contact_sheet(
        queries,
        neighbours,
        [[0, 1, 2, 3], [4, 5, 6, 7]],
        neighbour_labels=[[0, 1, 2, -1], [1, 1, 1, 1]],
        query_labels=[0, 1],
        class_names=["T-shirt/top", "Trouser", "Pullover"],
    )
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
    assert sheet.shape[1] > 5 * 84 and sheet.shape[0] > 2 * 84
    out = save_contact_sheet(str(tmp_path / "sheet.png"), queries, neighbours, [[0, 1, 2, 3], [4, 5, 6, 7]])
    assert Image.open(out).format == "PNG"
    with pytest.raises(ValueError, match="distances"):
        render_contact_sheet(queries, neighbours, [0, 1])


def test_neighbour_paths_come_from_the_index():
    from coophash_keras.cli.search import neighbour_paths
    from coophash_keras.index import HammingIndex

    codes = np.array([[0, 1], [0, 3], [0, 7]], np.uint8)
    with_paths = HammingIndex(16).add(codes, np.array([10, 20, 30]), ["a.png", "b.png", "c.png"])
    assert neighbour_paths(with_paths, np.array([[20, 10], [30, 20]])) == [["b.png", "a.png"], ["c.png", "b.png"]]
    assert neighbour_paths(HammingIndex(16).add(codes, np.array([10, 20, 30])), np.array([[20, 10]])) is None


def test_make_fashion_folder_script(tmp_path):
    from coophash_keras.data import FASHION_MNIST_DIR

    if not os.path.exists(os.path.join(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz")):
        pytest.skip("Fashion-MNIST is not installed")
    spec = importlib.util.spec_from_file_location(
        "make_fashion_folder", os.path.join(REPO, "scripts", "make_fashion_folder.py")
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out, pool = tmp_path / "fashion", tmp_path / "pool"
    script.main(
        ["--out", str(out), "--per-class", "2", "--split", "test", "--unlabeled", str(pool), "--unlabeled-count", "3"]
    )
    data, _ = load(load_image_folder, out)
    assert len(data) == 20 and data.image_shape == (28, 28, 1) and data.class_names[:2] == ["ankle_boot", "bag"]
    assert sorted(os.listdir(out / "bag")) == ["test_00018.png", "test_00030.png"]  # the first bags of t10k
    assert len(os.listdir(pool)) == 3
    # The pool of the folder-plus-pool reproduction (docs/FEW_LABELS.md): every other test image, by class.
    out, pool = tmp_path / "fashion2", tmp_path / "pool2"
    script.main(
        ["--out", str(out), "--per-class", "990", "--split", "test", "--unlabeled", str(pool)]
        + ["--unlabeled-count", "all", "--unlabeled-by-class"]
    )
    assert sorted(os.listdir(pool)) == sorted(os.listdir(out))
    assert sum(len(os.listdir(pool / c)) for c in os.listdir(pool)) == 100  # 10,000 - 10 x 990


# ---------------------------------------------------------------------------- CLI round trip


def cli(capsys, *argv):
    """Run `coophash ARGV` in this process (no TensorFlow start-up per command): (code, out, err)."""
    from coophash_keras.cli import main

    code = main([*argv, "--progress", "none"] if argv[0] in ("train", "evaluate") else list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_round_trip_on_a_folder_of_pngs(class_folder, tmp_path, capsys):
    run = tmp_path / "run"
    (class_folder / "cat" / "broken.png").write_bytes(b"broken")
    code, out, err = cli(
        capsys,
        "train",
        "--dataset",
        f"folder:{class_folder}",
        "--image-size",
        "8,8",
        "--bits",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--query-per-class",
        "2",
        "--run-dir",
        str(run),
        *SMALL,
    )
    assert code == 0, err
    assert "cat/broken.png (unrecognised image data)" in err and "training CoopHash on folder:" in out
    record = json.loads((run / "run.json").read_text())
    assert record["dataset"] == f"folder:{class_folder}" and record["image_size"] == [8, 8] and record["channels"] == 1
    assert record["num_images"] == 25 and len(record["fingerprint"]) == 16  # a row: skipped when decoded

    code, out, err = cli(capsys, "evaluate", "--run-dir", str(run), "--topk", "5")
    assert code == 0, err
    assert json.loads((run / "metrics.json").read_text())["num_query"] == 6

    index = tmp_path / "db.idx"
    code, out, err = cli(
        capsys, "index", "build", "--model", str(run), "--dataset", f"folder:{class_folder}", "--out", str(index)
    )
    assert code == 0, err
    assert "indexed 24 codes (16 bits" in out

    query = png(str(tmp_path / "q.png"), size=(16, 16), value=200)  # another size: resized to the model's 8x8
    code, out, err = cli(capsys, "index", "search", "--index", str(index), "--model", str(run), "--k", "3", query)
    assert code == 0, err
    assert "ids=[" in out and "distances=[" in out

    sheet = tmp_path / "sheet.png"
    code, out, err = cli(
        capsys,
        "search",
        "--model",
        str(run),
        "--index",
        str(index),
        "-k",
        "4",
        query,
        "--dataset",
        f"folder:{class_folder}",
        "--sheet",
        str(sheet),
    )
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "query\trank\tdistance\tneighbour" and len(lines) == 1 + 4 + 1
    name, rank, distance, neighbour = lines[1].split("\t")
    assert name == query and rank == "1" and 0 <= int(distance) <= 16 and neighbour.startswith(str(class_folder))
    assert Image.open(sheet).size[0] > 4 * 84

    # the index keeps the folder's file paths: the neighbours are named by them
    folder_paths = load_image_folder(str(class_folder), warn=lambda m: None).extras["paths"]
    assert all(line.split("\t")[3] in folder_paths for line in lines[1:5])
    # an index without paths names neighbours by id, and a sheet then needs --dataset for the pixels
    from coophash_keras.index import HammingIndex

    built = HammingIndex.load(str(index))
    bare = tmp_path / "bare.idx"
    HammingIndex(built.num_bits, built.model_version).add(built.packed_codes(), built.ids).save(str(bare))
    code, _, err = cli(capsys, "search", "--model", str(run), "--index", str(bare), query, "--sheet", str(sheet))
    assert code == 2 and "keeps no file paths; pass --dataset" in err

    (class_folder / "cat" / "00.png").unlink()  # the run's data changed under it
    code, _, err = cli(capsys, "evaluate", "--run-dir", str(run))
    assert code == 2 and "has changed since the run was trained (25 images then, 24 now" in err


@pytest.mark.parametrize(
    "dataset,match",
    [
        ("images:{root}", "a retrieval split needs class labels"),
        ("folder:{root}/cat", "not in class subfolders"),
        ("csv:{root}/none.csv", "no such file"),
    ],
)
def test_cli_bad_file_datasets_are_one_line_errors(class_folder, tmp_path, capsys, dataset, match):
    code, _, err = cli(
        capsys, "train", "--dataset", dataset.format(root=class_folder), "--run-dir", str(tmp_path / "r")
    )
    assert code == 2 and match in err and "Traceback" not in err
