"""Random appearance changes of a training pair's image channel: other scanners, sequences and contrasts.

Each training dataset shows its structures with one appearance (cine-MR's bright blood, T1's grey
hippocampus, CT's Hounsfield scale). A structure family never trained on comes with an appearance never
seen, and the leave-one-family-out diagnosis (``bench/interactive_slice_diagnosis.py``) put most of that
gap there, not in geometry. Stacked random intensity changes (histogram shift, gamma, bias field, blur,
noise, inversion: MONAI's transforms, stacked as in BigAug, Zhang et al., IEEE TMI 2020) widen the
appearances the network learns from without new labels.
"""

from __future__ import annotations

import numpy as np
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandBiasField,
    RandGaussianNoise,
    RandGaussianSmooth,
    RandHistogramShift,
)
from monai.utils import convert_to_numpy

INVERT_PROBABILITY = 0.15  # of an augmented image: bright and dark swapped (T1 against T2, CT against MR)


class AppearanceAugmentation:
    """With ``probability``, a random stack of intensity changes of one image channel (the normalised
    ``(i, j, k)`` crop, in the volume's z-score units); otherwise the image unchanged. Random draws come
    from ``rng`` (and a MONAI random state seeded from it), so a process's stream stays reproducible."""

    def __init__(self, probability: float, rng: np.random.Generator):
        self.probability = probability
        self.rng = rng
        # Applied to the image shifted to a zero minimum: gamma, bias field and histogram shift act on
        # non-negative intensities; the shift is undone afterwards.
        self.intensity_changes = Compose([
            RandHistogramShift(num_control_points=(5, 10), prob=0.3),
            RandAdjustContrast(gamma=(0.5, 2.0), prob=0.5),
            RandBiasField(degree=3, coeff_range=(0.0, 0.3), prob=0.3),
            RandGaussianSmooth(sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0), sigma_z=(0.25, 1.0), prob=0.2),
        ])
        self.noise = RandGaussianNoise(prob=0.3, mean=0.0, std=0.1)
        seed = int(rng.integers(2**31))
        self.intensity_changes.set_random_state(seed=seed)
        self.noise.set_random_state(seed=seed + 1)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The image (3D, float) after the random changes, as a new float32 array (or ``image`` itself)."""
        if self.rng.random() >= self.probability:
            return image
        low = float(image.min())
        changed = convert_to_numpy(self.intensity_changes((image - low)[None])) + low
        changed = convert_to_numpy(self.noise(changed))[0]
        if self.rng.random() < INVERT_PROBABILITY:
            changed = -changed
        return np.asarray(changed, np.float32)
