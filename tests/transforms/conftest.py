"""Fixtures of the transform tests."""

from tests.transforms.phantoms import phantom_on_device

__all__ = ["phantom_on_device"]
