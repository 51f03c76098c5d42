"""Decoding a shard sample: members to arrays (`sample`), reduced JPEG decoding (`jpeg`), nvJPEG on
the device (`gpu`)."""
