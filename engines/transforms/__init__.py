"""Pre- and post-processing: the allowlisted transform registry and prompt geometry (extreme points)."""
