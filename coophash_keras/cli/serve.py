"""`coophash serve`: a model base path behind the TF-Serving REST and gRPC APIs."""

from coophash_keras.cli.common import CLIError, port_number, positive_float, positive_int


def add_parser(sub):
    s = sub.add_parser("serve", help="serve a model base path with the TF-Serving REST and gRPC APIs")
    s.add_argument("--model-base", required=True)
    s.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    s.add_argument("--port", type=port_number, default=8501, help="REST port")
    s.add_argument("--grpc-port", type=port_number, default=8500)
    s.add_argument("--poll-interval", type=positive_float, default=1.0, help="seconds between scans for new versions")
    s.add_argument("--max-body-bytes", type=positive_int, default=32 * 1024 * 1024)
    s.add_argument(
        "--index",
        action="append",
        metavar="NAME=PATH",
        help="serve POST /v1/models/NAME:search from this index file, or NAME=milvus:URI#COLLECTION",
    )
    s.set_defaults(func=run)


def run(args):
    import logging

    from serving.server import ModelServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    indexes = {}
    for item in args.index or []:
        if "=" not in item:
            raise CLIError(f"--index expects NAME=PATH, got {item!r}")
        name, path = item.split("=", 1)
        indexes[name] = path
    server = ModelServer(
        args.model_base, args.host, args.port, args.grpc_port, args.poll_interval, args.max_body_bytes, indexes
    )
    if not server.registry.names():
        raise CLIError(f"no model found under {args.model_base} (expected <base>/<name>/<version>/saved_model.pb)")
    server.serve_forever()
