"""Stage 2, solve: SCS and Clarabel behind one interface (``backends``: statuses, workspace
reuse, warm starts) and ``solver_args`` as users and cvxpylayers code write them. The driver
that runs a batch through them is :mod:`dpplayers._forward`. Imports only the toolkit.
"""
