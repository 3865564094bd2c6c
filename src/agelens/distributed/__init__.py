"""Age estimation past one machine, on Ray Data: the only part of AgeLens that imports Ray.

``estimate_dataset`` turns a Ray Dataset of image paths (or bytes) into a Dataset of the
rows ``agelens predict --csv`` writes: one per face, plus one per image with no face or an
error. ``agelens predict SRC --engine ray`` runs it over a folder, a list file or a glob
(see :mod:`agelens.distributed.job`). Needs ``pip install 'agelens[ray]'``.
"""

from agelens.distributed.actors import estimate_dataset

__all__ = ["estimate_dataset"]
