"""`coophash query`: send image files to a served model (REST or gRPC) and print codes (and neighbours)."""

import os

from coophash_keras.cli.common import CLIError, code_text


def add_parser(sub):
    q = sub.add_parser("query", help="send image files to a served model and print their codes")
    q.add_argument("images", nargs="+")
    q.add_argument("--url", default="http://127.0.0.1:8501", help="REST endpoint")
    q.add_argument("--grpc", default=None, metavar="HOST:PORT", help="use gRPC instead of REST")
    q.add_argument("--model", default="coophash")
    q.add_argument("--version", type=int, default=None)
    q.add_argument("--search", action="store_true", help="also print top-k ids (needs the search signature)")
    q.set_defaults(func=run)


def query(images, url=None, grpc=None, model="coophash", version=None, search=False):
    """Codes (and with `search` the top-k ids and distances) of image files from a served model.
    The files go as encoded bytes: `hash_image_bytes`, or `search_image_bytes` with search (one
    call from a JPEG to its neighbours, over REST or gRPC)."""
    from coophash_keras.serving.client import GrpcClient, RestClient, ServingClientError

    blobs = []
    for path in images:
        if not os.path.exists(path):
            raise CLIError(f"missing image file {path}")
        with open(path, "rb") as fh:
            blobs.append(fh.read())
    signature = "search_image_bytes" if search else "hash_image_bytes"
    try:
        if grpc:
            return GrpcClient(grpc, model, version).predict({"image_bytes": blobs}, signature)
        client = RestClient(url, model, version)
        if not search:
            return client.hash_image_files(blobs)
        return client.predict({"signature_name": signature, "inputs": {"image_bytes": [_b64(b) for b in blobs]}})[
            "outputs"
        ]
    except ServingClientError as exc:
        raise CLIError(f"server answered {exc}") from None
    except OSError as exc:
        raise CLIError(f"cannot reach the server: {exc}") from None


def _b64(blob):
    import base64

    return {"b64": base64.b64encode(blob).decode()}


def run(args):
    out = query(args.images, args.url, args.grpc, args.model, args.version, args.search)
    for i, path in enumerate(args.images):
        line = f"{path}\tcode={code_text(out['codes'][i])}"
        if "energy" in out:
            line += f"\tenergy={float(out['energy'][i]):.3f}"
        if "ids" in out:
            ids, dist = list(map(int, out["ids"][i])), list(map(int, out["distances"][i]))
            line += f"\ttop_ids={ids}\tdistances={dist}"
        print(line)
    return out
