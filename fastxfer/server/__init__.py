"""The server: a pre-forking master, workers, and the control and stream connections they serve."""
