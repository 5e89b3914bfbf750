"""Regenerate docs/CONFIG.md from CoopHashConfig: python docs/make_config_doc.py"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def render():
    from coophash_keras.config import CoopHashConfig

    with open(os.path.join(HERE, "CONFIG.md.head")) as fh:
        head = fh.read()
    with open(os.path.join(HERE, "CONFIG.md.tail")) as fh:
        tail = fh.read()
    return head + CoopHashConfig.provenance_table() + "\n" + tail


if __name__ == "__main__":
    with open(os.path.join(HERE, "CONFIG.md"), "w") as fh:
        fh.write(render())
