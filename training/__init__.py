"""Training, data and evaluation for Robust Video Matting (Lin et al., arXiv 2108.11515); see docs/training.md.

Entry points: ``rvm-train`` (:mod:`training.cli`) and ``rvm-evaluate`` (:mod:`training.evaluate`). Nothing is
imported here, so ``import training.losses`` does not pull in the data or plotting stack.
"""
