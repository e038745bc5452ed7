"""The synthetic demo sets, in the real formats, built once into the cache."""
