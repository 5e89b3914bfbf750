"""`coophash query`: send image files to a served model (REST or gRPC) and print codes (and neighbours)."""

import os

from coophash_keras.cli.common import CLIError, code_text, read_images


def add_parser(sub):
    q = sub.add_parser("query", help="send image files to a served model and print their codes")
    q.add_argument("images", nargs="+")
    q.add_argument("--url", default="http://127.0.0.1:8501", help="REST endpoint")
    q.add_argument("--grpc", default=None, metavar="HOST:PORT", help="use gRPC instead of REST")
    q.add_argument("--model", default="coophash")
    q.add_argument("--version", type=int, default=None)
    q.add_argument("--search", action="store_true", help="also print top-k ids (needs the search signature)")
    q.set_defaults(func=run)


def _served_image_shape(client):
    """Image shape (H, W, C) of a served model, read from its metadata."""
    sig = client.metadata()["metadata"]["signature_def"]["signature_def"]["serving_default"]
    dims = sig["inputs"]["images"]["tensor_shape"]["dim"]
    return tuple(int(d["size"]) for d in dims[1:])


def query(images, url=None, grpc=None, model="coophash", version=None, search=False):
    """Codes (and with `search` the top-k ids and distances) of image files from a served model."""
    from serving.client import GrpcClient, RestClient, ServingClientError

    blobs = []
    for path in images:
        if not os.path.exists(path):
            raise CLIError(f"missing image file {path}")
        with open(path, "rb") as fh:
            blobs.append(fh.read())
    if grpc and search:
        raise CLIError("--search needs decoded images; use the REST --url form")
    try:
        if grpc:
            return GrpcClient(grpc, model, version).predict({"image_bytes": blobs}, "hash_image_bytes")
        client = RestClient(url, model, version)
        out = client.hash_image_files(blobs)
        if search:
            decoded = read_images(images, _served_image_shape(client))[0]
            found = client.predict({"signature_name": "search", "inputs": {"images": decoded.tolist()}})["outputs"]
            out.update(ids=found["ids"], distances=found["distances"])
        return out
    except ServingClientError as exc:
        raise CLIError(f"server answered {exc}") from None
    except OSError as exc:
        raise CLIError(f"cannot reach the server: {exc}") from None


def run(args):
    out = query(args.images, args.url, args.grpc, args.model, args.version, args.search)
    for i, path in enumerate(args.images):
        line = f"{path}\tcode={code_text(out['codes'][i])}\tenergy={float(out['energy'][i]):.3f}"
        if "ids" in out:
            ids, dist = list(map(int, out["ids"][i])), list(map(int, out["distances"][i]))
            line += f"\ttop_ids={ids}\tdistances={dist}"
        print(line)
    return out
