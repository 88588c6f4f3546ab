"""Labelled Jacobian blocks of a Solution (``Solution.sensitivity``) and what they need:
resolving the user's parameters and outputs by object, name or position, the optional
table and plotting libraries, and the plots. Below ``_solution`` (which calls it) and
imported by :mod:`dpplayers.sensitivity`; imports only the toolkit.
"""
