"""Once-for-All: one elastic network (kernel size, expand ratio, depth, resolution) trained once by progressive
shrinking, from which a standalone sub-network of any setting is taken without retraining.

    elastic.py    elastic ops: BatchNorm over the first channels, the depthwise conv with kernel transformations,
                  the elastic inverted-residual block and its plain counterpart
    network.py    OFANetwork (presets for CIFAR and 8 px digits), its settings and standalone sub-networks
    shrinking.py  progressive shrinking: the phases, ShrinkingModule (one phase), sub-network measurement
    task.py       ``task=ofa``: the phases in order, each resumable, and the trained network's file
"""

from .network import PRESETS, OFANetwork, OFASubnet

__all__ = ["PRESETS", "OFANetwork", "OFASubnet"]
