"""`coophash diagnose`: is a run's generator generating? (coophash_keras.diagnostics)"""

from coophash_keras.cli.common import nonnegative_int


def add_parser(sub):
    d = sub.add_parser(
        "diagnose",
        help="measure a CoopHash or DSH-GAN run's generator: spread, class consistency, Frechet distance, "
        "posterior collapse, energies; write RUN/diagnostics.json and RUN/samples.png",
    )
    d.add_argument("--run-dir", required=True)
    d.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the latents z drawn for the samples")
    d.add_argument("--output", default=None, help="report JSON path (default RUN/diagnostics.json)")
    d.add_argument("--grid", default=None, help="sample grid PNG path (default RUN/samples.png)")
    d.set_defaults(func=run)


def run(args):
    import os

    from coophash_keras.diagnostics import generator_diagnostics, has_generator, save_sample_grid, summary_line
    from coophash_keras.evaluation import load_run, load_run_data, model_path
    from coophash_keras.io import atomic_write_json, load_model
    from coophash_keras.run_spec import RunError

    model = load_model(model_path(args.run_dir))
    if not has_generator(model):
        raise RunError(
            f"{args.run_dir} holds a {type(model).__name__}, which has no generator (CoopHash and DSH-GAN have one)"
        )
    data = load_run_data(load_run(args.run_dir))
    report = generator_diagnostics(model, data, seed=args.seed, verbose=1)
    output = args.output or os.path.join(args.run_dir, "diagnostics.json")
    atomic_write_json(output, report)
    grid = save_sample_grid(
        args.grid or os.path.join(args.run_dir, "samples.png"),
        model,
        data.num_classes,
        seed=args.seed,
        class_names=data.class_names,
    )
    print(f"{report['model']} on {data.name}: {summary_line(report)}")
    print(f"report: {output}; samples: {grid}")
    return report
