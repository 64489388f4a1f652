"""The edge of rcmseg: HTTP routes, settings, auth, the viewer page and the command line.

Nothing in this package imports torch; work is handed to ``worker`` by name.
"""
