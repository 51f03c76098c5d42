"""Parts shared by task types: geometry and pixel kernels, augmentation, box ops, layers, necks,
the detection and embedding metrics, annotation checks, label-space readers and drawing."""
