"""Build the C kernels of the sparse runtime.

The kernels are plain C (not built against PyTorch's C++ ABI); Python calls them with raw pointers of
contiguous tensors. ISA-specific code paths are compiled with per-function target attributes and chosen at
run time by CPU feature, so one build runs on any x86-64 (and the portable path anywhere else).
"""

import glob
import os

from setuptools import Extension, setup

csrc = "src/sparseft/runtime/csrc"
sources = sorted(glob.glob(os.path.join(csrc, "*.c")))
headers = sorted(glob.glob(os.path.join(csrc, "*.h")))

ext_modules = []
if sources:
    ext_modules.append(
        Extension(
            "sparseft.runtime._kernels",
            sources=sources,
            include_dirs=[csrc],
            depends=headers,  # rebuild when a header changes
            extra_compile_args=["-O3", "-std=c11", "-fno-strict-aliasing", "-pthread"],
            extra_link_args=["-pthread"],
        )
    )

setup(ext_modules=ext_modules)
