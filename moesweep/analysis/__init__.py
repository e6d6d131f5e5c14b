"""Post-training analyses, as pure functions (model, batches, params) -> records.

``hessian``: sharpness of the cross-entropy loss (top eigenvalues, trace, spectral density);
``landscape``: loss/accuracy along eigenvector, filter-normalised random and Gaussian directions;
``latency``: head and end-to-end inference timing and FLOPs. File I/O and Ray live elsewhere
(``results.py``, ``sweep/tasks.py``).
"""
