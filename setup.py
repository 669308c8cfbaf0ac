"""Build hook of the project: its metadata is in pyproject.toml.

Two compiled parts, both optional: without a C compiler the install goes on.
``streamlearn.serving._native`` scores the plain one-event prediction body from
its raw bytes (without it the service answers those bodies in Python);
``streamlearn.learners._kernel`` learns CSR bundles one event at a time
(without it, learners refuse ``update="event"`` and learn in mini-batch steps).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "streamlearn.serving._native",
            sources=["streamlearn/serving/_native.c"],
            depends=["streamlearn/serving/_native_pow5.h", "streamlearn/serving/_native_codes.h"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "streamlearn.learners._kernel",
            sources=["streamlearn/learners/_kernel.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
    ]
)
