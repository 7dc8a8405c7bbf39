"""genengine.bench: the microbenchmark suite (`python -m genengine.bench`, or `python -m genengine bench`).

harness.py holds the interleaved timer and the machine ceilings; one module per op family
(diffusion.py) builds its rows. See benchmarks/README.md for what each column means.
"""


def main(argv=None):
    from .__main__ import main as _main

    return _main(argv)
