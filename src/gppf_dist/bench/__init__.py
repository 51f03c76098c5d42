"""Benchmarks behind `gppf-bench`: data (loader vs webdataset), step (SIMT vs bare loop), ep."""
