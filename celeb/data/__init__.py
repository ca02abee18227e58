"""Data: CelebA's annotation files -> one typed table, identity-disjoint splits, the decode-once image
cache, and the batch loader and augmentation that serve it to trainers."""
