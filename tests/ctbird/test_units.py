"""``ctbird.units``: the image scale [0, 1] against HU."""

from __future__ import annotations

import numpy as np
import torch

from ctbird.units import PRIOR_HU_WINDOW, hu_to_image, hu_to_unit, image_to_hu


def test_image_scale_is_the_prior_window_on_zero_one_clipped_outside():
    hu = np.array([-3024.0, -1024.0, 0.0, 1000.0, 3071.0, 5000.0])
    image = hu_to_image(hu)
    assert image[0] == 0.0 and image[1] == 0.0 and image[-1] == 1.0  # padding and metal clip to the window's ends
    np.testing.assert_allclose(image[2:5], (hu_to_unit(hu[2:5]) + 1.0) / 2.0)
    np.testing.assert_allclose(image_to_hu(image[1:5]), hu[1:5], atol=1e-9)
    np.testing.assert_allclose(image_to_hu(np.array([0.0, 1.0])), PRIOR_HU_WINDOW)
    as_tensor = hu_to_image(torch.from_numpy(hu.astype(np.float32)))
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.dtype == torch.float32
    np.testing.assert_allclose(as_tensor.numpy(), image, atol=1e-6)
