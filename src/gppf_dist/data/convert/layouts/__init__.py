"""Readers of the dataset layouts `gppf-shards convert` understands (see `base` for the
contract); `convert_layouts.LAYOUTS` names them."""
