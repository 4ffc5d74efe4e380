"""The dependency-free PNG writer round-trips through Pillow, and image grids place each
image in its cell."""

import io

import numpy as np
import pytest
from PIL import Image

from cofre_jax.io.png import encode_png, image_grid, write_png


@pytest.mark.parametrize(("shape", "mode"), [((5, 7), "L"), ((5, 7, 1), "L"), ((4, 3, 3), "RGB")])
def test_png_round_trips_through_pillow(shape, mode, tmp_path):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / "x.png"
    write_png(str(path), image)
    with Image.open(path) as read:
        assert read.mode == mode and read.size == (shape[1], shape[0])
        np.testing.assert_array_equal(np.asarray(read).reshape(shape), image)
    assert path.read_bytes() == encode_png(image)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temporary file left


def test_png_refuses_what_it_cannot_encode():
    for bad in (
        np.zeros((2, 2), np.float32),
        np.zeros((2, 2, 2), np.uint8),
        np.zeros((0, 3), np.uint8),
    ):
        with pytest.raises(ValueError, match="PNG image") as err:
            encode_png(bad)
        assert "\n" not in str(err.value)


def test_grid_places_images_row_major_with_padding():
    images_NxHxWxC = np.stack([np.full((2, 3, 3), 10 * (i + 1), np.uint8) for i in range(5)])
    grid = image_grid(images_NxHxWxC, rows=2, cols=3, pad=1, pad_value=0)
    assert grid.shape == (2 * 3 + 1, 3 * 4 + 1, 3)
    for i in range(5):
        top, left = 1 + (i // 3) * 3, 1 + (i % 3) * 4
        assert (grid[top : top + 2, left : left + 3] == 10 * (i + 1)).all()
    assert (grid[4:6, 9:12] == 0).all()  # the sixth cell is blank
    assert (grid[0] == 0).all() and (grid[:, 4] == 0).all()  # the padding
    with Image.open(io.BytesIO(encode_png(grid))) as read:
        np.testing.assert_array_equal(np.asarray(read), grid)
    with pytest.raises(ValueError, match="do not fit a grid of 2 x 2"):
        image_grid(images_NxHxWxC, rows=2, cols=2)
