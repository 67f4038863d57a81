"""HU slice stacks (ctbird.stacks): the file format and the one pre-processing of training and inference."""

from __future__ import annotations

import numpy as np
import pytest

from ctbird.errors import InputError
from ctbird.io import to_working_size
from ctbird.stacks import SliceStack, read_slice_stack, working_slices, write_slice_stack
from ctbird.units import clip_hu


def _stack(slices: int = 4) -> SliceStack:
    rng = np.random.default_rng(0)
    return SliceStack(images=rng.integers(-1024, 2000, size=(slices, 6, 8)).astype(np.float32),
                      pixel_spacing_mm=np.linspace(0.6, 0.9, slices), labels=np.array([f"s{i}.dcm" for i in range(slices)]),
                      patient=np.array(["a", "a", "b", "b"][:slices]), description="four test slices")


def test_stack_round_trip_and_subset(tmp_path):
    stack = _stack()
    assert write_slice_stack(tmp_path / "deep" / "stack.npz", stack) > 0
    loaded = read_slice_stack(tmp_path / "deep" / "stack.npz")
    assert loaded.images.dtype == np.int16 and np.array_equal(loaded.images, stack.images)  # whole HU -> int16
    assert np.allclose(loaded.pixel_spacing_mm, stack.pixel_spacing_mm) and list(loaded.labels) == list(stack.labels)
    assert loaded.collection is None and loaded.description == "four test slices" and len(loaded) == 4
    part = loaded.subset([3, 1])
    assert np.array_equal(part.images, stack.images[[3, 1]]) and list(part.patient) == ["b", "a"]
    assert part.description == loaded.description
    fractional = SliceStack(images=stack.images + 0.25)
    write_slice_stack(tmp_path / "float.npz", fractional)
    assert read_slice_stack(tmp_path / "float.npz").images.dtype == np.float32


def test_plain_arrays_are_stacks(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros((5, 7)))
    np.savez(tmp_path / "single.npz", volume=np.zeros((2, 5, 7)))
    assert read_slice_stack(tmp_path / "one.npy").images.shape == (1, 5, 7)
    assert read_slice_stack(tmp_path / "single.npz").images.shape == (2, 5, 7)


@pytest.mark.parametrize("arrays, match", [
    ({"a": np.zeros((2, 4, 4)), "b": np.zeros(2)}, "'images'"),
    ({"images": np.zeros((2, 4, 4)), "patient": np.array(["a"])}, "one value per slice"),
    ({"images": np.zeros((2, 4, 4)), "description": np.array(["a", "b"])}, "single string"),
    ({"images": np.zeros((2, 0, 4))}, "non-empty"),
    ({"images": np.array([["a"]])}, "real HU"),
])
def test_bad_stacks_raise_input_error(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=match):
        read_slice_stack(tmp_path / "bad.npz")
    with pytest.raises(InputError, match="NumPy"):
        read_slice_stack(tmp_path / "missing.npz")


def test_working_slices_pad_with_air_and_keep_the_whole_field_of_view():
    wide = np.full((1, 8, 16), -3024.0, dtype=np.float32)  # outside-FOV padding value
    wide[0, 2:6, 0:2] = 1000.0  # anatomy at the far left edge: a centre crop would lose it
    slices, description = working_slices(wide, 8)
    assert slices.shape == (1, 8, 8) and slices.dtype == np.float32
    assert description == "pad to 16x16 with air, 2x2 block average"
    assert slices.min() == -1024.0  # clipped padding and the added air are both air
    assert slices[0, :, 0].max() == pytest.approx(1000.0)  # the left edge survives
    assert np.all(slices[0, :2] == -1024.0) and np.all(slices[0, -2:] == -1024.0)  # air above and below
    # the same function as the inference path (clip, then ctbird.io.to_working_size)
    np.testing.assert_array_equal(slices, to_working_size(clip_hu(wide), 8))


def test_working_slices_describe_what_they_do():
    assert working_slices(np.zeros((2, 8, 8)), 8)[1] == "none"
    assert working_slices(np.zeros((2, 24, 24)), 16)[1] == "anti-aliased bilinear resize 24->16"
    assert working_slices(np.zeros((10, 12)), 12)[1] == "pad to 12x12 with air"
    with pytest.raises(InputError, match="slices"):
        working_slices(np.zeros(5), 4)
