"""Experiments around one recipe: k-fold cross-validation (``cv``), recipe search (``tune``) and ensembles."""
