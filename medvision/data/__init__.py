"""Manifests: labelled studies, importing a hospital's own data, summaries."""
