"""spark-mail: a terminal-first publishing tool for email newsletters."""

__version__ = "0.1.0"
