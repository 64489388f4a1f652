"""The learning side of rcmseg: network factory, CAM math, weak-label data, training and metrics.

Pure torch/numpy: nothing in this package reads or writes files, talks to Redis or speaks HTTP.
"""
