"""`coophash search`: the top-k neighbours of query images in a saved index, named by file path,
and optionally drawn as a contact sheet (coophash_keras.contact_sheet).

A neighbour is named by the index's file path for it when the index keeps paths, else by the
dataset given with --dataset (its extras["paths"], for image-file datasets), else by its id.
The sheet needs the neighbours' pixels: from those paths, or from --dataset by id."""

from coophash_keras.cli.common import DATASET_HELP, CLIError, positive_int, read_images


def add_parser(sub):
    s = sub.add_parser("search", help="top-k neighbours of image files in an index, with their paths [and a sheet]")
    s.add_argument("--model", required=True, help="run directory or model.keras (the index's model)")
    s.add_argument("--index", required=True, help="a HammingIndex file (coophash index build)")
    s.add_argument("-k", "--k", type=positive_int, default=10, help="neighbours per query (default 10)")
    s.add_argument("--sheet", default=None, metavar="PNG", help="also draw the queries and neighbours into this PNG")
    s.add_argument(
        "--dataset",
        default=None,
        help="the data the index was built from, to name and draw neighbours by id when the index keeps no paths: "
        + DATASET_HELP,
    )
    s.add_argument("--data-dir", default=None)
    s.add_argument("images", nargs="+", help="query image files (or .npy arrays)")
    s.set_defaults(func=run)


def neighbour_paths(index, ids):
    """File paths [Q][k] of the neighbour ids [Q, k] (None where an approximate backend found
    nothing), or None if the index keeps no paths."""
    if not getattr(index, "has_paths", False):
        return None
    return [[p or None for p in row] for row in index.paths_for(ids).tolist()]


def _dataset_lookup(dataset, data_dir, config, ids):
    from coophash_keras.cli.index import load_model_data

    data = load_model_data(dataset, data_dir, config)
    if int(ids.max()) >= len(data) or int(ids.min()) < 0:
        raise CLIError(
            f"the index holds id {int(ids.max())} but {dataset} has {len(data)} images: pass the dataset the "
            "index was built from"
        )
    return data


def _pixels_from_paths(paths, image_shape):
    """Neighbour pixels decoded from their files at the model's input shape (None if unreadable)."""
    from coophash_keras.data.files import BadImage, decode_image

    h, w, c = image_shape
    out = []
    for row in paths:
        pixels = []
        for p in row:
            try:
                pixels.append(decode_image(p, (h, w), c) if p else None)
            except (BadImage, OSError):
                pixels.append(None)
        out.append(pixels)
    return out


def _draw_sheet(path, images, names, ids, distances, paths, data, image_shape):
    """The contact sheet: neighbour pixels from --dataset (with its classes) or from the files."""
    import os

    from coophash_keras.contact_sheet import save_contact_sheet

    labels = class_names = None
    if data is not None:
        pixels = data.pixels(ids.reshape(-1)).reshape(*ids.shape, *data.image_shape)  # only the k per query
        if data.num_classes > 0:
            labels, class_names = data.labels[ids], data.class_names
    else:
        pixels = _pixels_from_paths(paths, image_shape)
    titles = None
    if paths is not None:
        titles = [[os.path.basename(p) if p else f"id {int(i)}" for p, i in zip(*row)] for row in zip(paths, ids)]
    save_contact_sheet(
        path,
        images,
        pixels,
        distances,
        neighbour_labels=labels,
        class_names=class_names,
        query_titles=[os.path.basename(n) for n in names],
        neighbour_titles=titles,
    )


def run(args):
    from coophash_keras.evaluation import model_path
    from coophash_keras.index import HammingIndex
    from coophash_keras.io import load_model, model_fingerprint

    path = model_path(args.model)
    index = HammingIndex.load(args.index, expected_model_version=model_fingerprint(path))
    if args.sheet and args.dataset is None and not index.has_paths:
        raise CLIError(
            "--sheet needs the neighbours' pixels: this index keeps no file paths; pass --dataset, "
            "the data the index was built from"
        )
    model = load_model(path)
    images, names = read_images(args.images, model.config.image_shape)
    ids, distances = index.search(model.encode(images, packed=True), args.k)

    paths = neighbour_paths(index, ids)
    data = _dataset_lookup(args.dataset, args.data_dir, model.config, ids) if args.dataset else None
    if paths is None and data is not None and "paths" in data.extras:
        paths = data.extras["paths"][ids].tolist()
    print("query\trank\tdistance\tneighbour")
    for q, name in enumerate(names):
        for rank, (i, d) in enumerate(zip(ids[q], distances[q]), start=1):
            neighbour = paths[q][rank - 1] if paths is not None and paths[q][rank - 1] else str(int(i))
            print(f"{name}\t{rank}\t{int(d)}\t{neighbour}")
    if args.sheet:
        _draw_sheet(args.sheet, images, names, ids, distances, paths, data, model.config.image_shape)
        print(f"contact sheet: {args.sheet}")
    return ids, distances
