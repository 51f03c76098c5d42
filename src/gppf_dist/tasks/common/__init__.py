"""Parts shared by task types: geometry and pixel kernels, augmentation, box ops, layers, necks, and
the detection and embedding metrics."""
