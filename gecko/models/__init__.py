"""Flax encoder backbones, the Gecko dual encoder, and checkpoint import."""
