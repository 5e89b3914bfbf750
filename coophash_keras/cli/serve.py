"""`coophash serve`: a model base path behind the TF-Serving REST and gRPC APIs."""

from coophash_keras.cli.common import CLIError, nonnegative_int, port_number, positive_float, positive_int


def add_parser(sub):
    s = sub.add_parser("serve", help="serve a model base path with the TF-Serving REST and gRPC APIs")
    s.add_argument("--model-base", required=True)
    s.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    s.add_argument("--port", type=port_number, default=8501, help="REST port")
    s.add_argument("--grpc-port", type=port_number, default=8500)
    s.add_argument("--poll-interval", type=positive_float, default=1.0, help="seconds between scans for new versions")
    s.add_argument("--max-body-bytes", type=positive_int, default=32 * 1024 * 1024)
    # Named and defaulted as TF-Serving's --max_num_load_retries and --load_retry_interval_micros.
    s.add_argument(
        "--max-num-load-retries",
        type=nonnegative_int,
        default=5,
        help="retries of a version that failed to load, before it is skipped until its files change (default 5)",
    )
    s.add_argument(
        "--load-retry-interval-micros",
        type=int,
        default=60_000_000,
        help="microseconds between load retries; negative: no wait (default 60000000, one minute)",
    )
    s.add_argument(
        "--rest-api-num-threads",
        type=positive_int,
        default=None,
        help="threads answering complete REST requests (default: CPU cores, at least 2; with --enable_batching, "
        "2 x the largest merged batch, at most 128: each waits for its batch)",
    )
    s.add_argument(
        "--read-timeout",
        type=positive_float,
        default=30.0,
        help="seconds a connection may take to send a whole request (or to take a response) "
        "and may stay idle between requests, before it is closed (default 30)",
    )
    # TF-Serving's flags, spelled as TF-Serving spells them (the dashed forms work too).
    s.add_argument(
        "--enable_batching",
        "--enable-batching",
        dest="enable_batching",
        action="store_true",
        help="merge concurrent requests to one signature into one model call (docs/SERVING.md, 'Under load')",
    )
    s.add_argument(
        "--batching_parameters_file",
        "--batching-parameters-file",
        dest="batching_parameters_file",
        metavar="FILE",
        help="TF-Serving's BatchingParameters text proto (e.g. serving/config/batching.config); "
        "without it, --enable_batching takes TF-Serving's defaults",
    )
    s.add_argument(
        "--tensorflow_intra_op_parallelism",
        "--tensorflow-intra-op-parallelism",
        dest="intra_op_parallelism",
        type=nonnegative_int,
        default=0,
        help="threads one op may use (TF-Serving's flag; 0, the default: TensorFlow picks, one per core)",
    )
    s.add_argument(
        "--tensorflow_inter_op_parallelism",
        "--tensorflow-inter-op-parallelism",
        dest="inter_op_parallelism",
        type=nonnegative_int,
        default=0,
        help="ops run at once (TF-Serving's flag; 0, the default: TensorFlow picks, one per core); "
        "docs/SERVING.md, 'Under load', says what 1 and 1 do on 2 cores",
    )
    s.add_argument(
        "--index",
        action="append",
        metavar="NAME=PATH",
        help="serve POST /v1/models/NAME:search from this index file, or NAME=milvus:URI#COLLECTION",
    )
    s.set_defaults(func=run)


def run(args):
    import gc
    import logging
    import signal
    import threading

    from coophash_keras.serving.errors import ListenError
    from coophash_keras.serving.server import ModelServer

    # INFO: the start-up line and every version loaded are shown; access lines and client
    # disconnects are DEBUG.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    batching = None
    if args.enable_batching:
        from coophash_keras.serving.batching_config import BatchingParameters, read_batching_parameters

        try:
            batching = (
                read_batching_parameters(args.batching_parameters_file)
                if args.batching_parameters_file
                else BatchingParameters()
            )
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        logging.info("batching: %s", batching)
    elif args.batching_parameters_file:
        logging.warning("--batching_parameters_file is ignored without --enable_batching (as TF-Serving does)")
    _set_tensorflow_threads(args.intra_op_parallelism, args.inter_op_parallelism)
    indexes = {}
    for item in args.index or []:
        if "=" not in item:
            raise CLIError(f"--index expects NAME=PATH, got {item!r}")
        name, path = item.split("=", 1)
        indexes[name] = path
    # Python's cyclic garbage collector walks every tracked object, and TensorFlow and Keras leave
    # ~360,000 of them; a raw-pixel JSON body allocates ~200,000 lists and ints, which set off full
    # collections: requests that take 50 ms took up to 300 ms (docs/SERVING.md, "Under load").
    # Freezing what exists now, before any model loads, takes those out of every collection; the
    # models' own objects stay collectable, so a replaced version is still freed.
    gc.collect()
    gc.freeze()
    try:
        server = ModelServer(
            args.model_base,
            args.host,
            args.port,
            args.grpc_port,
            args.poll_interval,
            args.max_body_bytes,
            indexes,
            max_num_load_retries=args.max_num_load_retries,
            load_retry_interval=args.load_retry_interval_micros / 1e6,
            rest_api_num_threads=args.rest_api_num_threads,
            read_timeout=args.read_timeout,
            batching_parameters=batching,
        )
    except BaseException as exc:
        gc.unfreeze()  # not serving after all (e.g. an in-process call in a test): undo the freeze
        if isinstance(exc, ListenError):
            raise CLIError(str(exc)) from None
        raise
    if not server.registry.names():
        server.stop()
        gc.unfreeze()
        failed = ", ".join(f"{name} version {version}" for name, version in server.registry.failed_loads())
        if failed:
            raise CLIError(f"no model under {args.model_base} could be loaded ({failed}: see the log above)")
        raise CLIError(f"no model found under {args.model_base} (expected <base>/<name>/<version>/saved_model.pb)")
    # SIGTERM (docker stop, kill) stops the server as Ctrl-C does: queued batches are answered and
    # the batching statistics logged, instead of the process dying mid-request.
    if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
    server.serve_forever()


def _set_tensorflow_threads(intra, inter):
    """TF-Serving's --tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism (0: leave
    TensorFlow's choice). They must be set before TensorFlow runs its first op."""
    if not intra and not inter:
        return
    import tensorflow as tf

    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError as exc:  # TensorFlow already ran ops in this process (an in-process call)
        raise CLIError(f"cannot set TensorFlow's thread pools now: {exc}") from None


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt
