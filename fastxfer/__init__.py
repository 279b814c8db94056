"""fastxfer: parallel, encrypted, verified file backup."""

__version__ = "0.1.0"
