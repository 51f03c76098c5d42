"""Benchmarks behind `gppf-bench`: data (loader vs plain webdataset), step (SIMT vs bare loop), ep."""
