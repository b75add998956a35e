"""Compile the C twins of the parse hot path in place, as `make venv` and the image do.

    python scripts/build_native.py

common/_events_native.c (the dedup key, the Liquidation constructor),
collector/_validation_native.c (amount, price and time checks) and common/_live_native.c (the
Redis live view's write arguments) become `.so` files beside their Python modules, which use them
when present (`common.events.NATIVE`, `collector.validation.NATIVE`, `common.live_scripts.NATIVE`).
setuptools' build_ext with the interpreter's own compiler flags: it needs a C compiler and the
Python headers (scripts/install-system-packages.sh installs both). Rebuilds only what changed.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Warnings shown, not fatal: another gcc or Python may warn where this one does not (both files
# build without a warning under -Wall -Wextra against Python 3.11, 3.12 and 3.13).
FLAGS = ["-O2", "-Wall"]
SLOTS = ["common/_slots.h"]  # included by both common/ twins: a change rebuilds them
EXTENSIONS = [
    Extension("common._events_native", ["common/_events_native.c"], depends=SLOTS, extra_compile_args=FLAGS),
    Extension("collector._validation_native", ["collector/_validation_native.c"], extra_compile_args=FLAGS),
    Extension("common._live_native", ["common/_live_native.c"], depends=SLOTS, extra_compile_args=FLAGS),
]

if __name__ == "__main__":
    os.chdir(ROOT)
    setup(
        name="liquidation-aggregator-native",
        packages=[],
        py_modules=[],
        ext_modules=EXTENSIONS,
        script_args=["-q", "build_ext", "--inplace", "--build-temp", "var/build"],
    )
