"""Engine kinds (extreme points, automatic segmentation, ...) and the one registry of kinds and model types."""
