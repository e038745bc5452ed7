"""Readers of the real dataset layouts, one module per layout (see ../shared/DATA_FORMATS.md)."""
