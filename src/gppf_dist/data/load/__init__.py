"""Loading: canonical streams, one stream's reader, worker processes, the train and eval loaders, a
rank's loaders for its plan, prefetch to the device."""
