"""What is measured of a trained model: accuracies per view and group, concept
activation vectors and TCAV, LRP relevance and its share on the artifact, heatmaps.

May import: ``debiasbench.core``, ``debiasbench.data``, ``debiasbench.models``.
"""
