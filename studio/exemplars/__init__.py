"""Dataset examples: an index (one SQLite file) of the images of a folder that most activate each channel of
chosen layers, with the strongest neuron's receptive-field crop and the channel's statistics over the folder.

    from studio.exemplars import build_index, examples, unit_statistics
    build_index(model, "photos/", "blocks.4,blocks.5", "examples.sqlite")
    top = examples("examples.sqlite", "blocks.4:12")          # best first; top[0].crop() is [C, h, w]
    unit_statistics("examples.sqlite", "blocks.4:12").max
"""

from studio.exemplars.build import UnreadableImage, build_index
from studio.exemplars.query import (Example, IndexInfo, UnitStatistics, check_index, examples, index_info,
                                    unit_statistics)

__all__ = ["Example", "IndexInfo", "UnitStatistics", "UnreadableImage", "build_index", "check_index", "examples",
           "index_info", "unit_statistics"]
