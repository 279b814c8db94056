"""The command line: the one place that prints to the user and exits."""
