"""cffi_modules cannot be declared in pyproject.toml; this is the one hook."""
from setuptools import setup

setup(cffi_modules=["libdsm/_build.py:ffibuilder"])
