"""`coophash encode`: binary codes of image files."""

from coophash_keras.cli.common import code_text, read_images


def add_parser(sub):
    c = sub.add_parser("encode", help="print binary codes of images (PNG/JPEG files or .npy arrays)")
    c.add_argument("--run-dir", required=True, help="run directory or model.keras path")
    c.add_argument("images", nargs="+")
    c.add_argument("--packed", action="store_true", help="print packed bytes as hex (bit 1 = +1, MSB first)")
    c.add_argument("--output", default=None, help="also save the codes to this .npy file")
    c.set_defaults(func=run)


def run(args):
    import numpy as np

    from coophash_keras.evaluation import model_path
    from coophash_keras.io import load_model

    model = load_model(model_path(args.run_dir))
    images, names = read_images(args.images, model.config.image_shape)
    codes = model.encode(images, packed=args.packed)
    if args.output:
        np.save(args.output, codes)
        print(f"wrote {codes.shape} {codes.dtype} codes to {args.output}")
    for path, code in zip(names, codes):
        print(f"{path}\t{code.tobytes().hex() if args.packed else code_text(code)}")
    return codes
