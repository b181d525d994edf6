"""onesuite-fs: SystemImager images and overrides served as oneSIS-style per-node roots."""
