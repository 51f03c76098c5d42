"""Layer 4 — benchmarks behind `gppf-bench`: data (loader vs webdataset), step (SIMT vs a bare
loop), ep (lego dispatch vs DeepSpeed MoE), throughput, placement and `gpu-check`. They build
their steps with `engine.assemble`, so they measure the product's wiring."""
