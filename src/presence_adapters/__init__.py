"""Adapters binding presence_core to the world."""
