"""Item readers, one per ItemReader InputType; see :mod:`runner.readers.base`."""

from runner.readers.base import ItemReader, KeyedValue, ReaderConfig, Shard, get_reader

__all__ = ["ItemReader", "KeyedValue", "ReaderConfig", "Shard", "get_reader"]
