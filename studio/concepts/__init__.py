"""Concept dictionaries (sparse autoencoders, NMF) of a layer: learned from a folder of images
(:mod:`studio.concepts.learn`), stored without pickle, and read by targets such as ``blocks5.concepts:17`` like
channels of a layer. Only the file format is imported here: :mod:`studio.targets` reads dictionaries."""

from studio.concepts.dictionary import Dictionary, load_dictionary

__all__ = ["Dictionary", "load_dictionary"]
