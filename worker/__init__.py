"""The mosaic pipeline: read, plan windows, run batches, stitch, export pyramids; and the queue job."""
