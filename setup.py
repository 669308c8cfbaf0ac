"""Build hook of the project: its metadata is in pyproject.toml.

The one compiled part, ``streamlearn.serving._native`` (the plain one-event
prediction body scored from its raw bytes), is optional: without a C compiler
the install goes on and the service answers those bodies in Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "streamlearn.serving._native",
            sources=["streamlearn/serving/_native.c"],
            depends=["streamlearn/serving/_native_pow5.h"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
