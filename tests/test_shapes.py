"""The procedurally generated shapes dataset: factors, rendering geometry, sampler, Dataset."""
import numpy as np
import pytest
import torch

from ssvae_lib.data import load_dataset
from ssvae_lib.shapes import (FACTOR_NAMES, FACTOR_SIZES, IMAGE_SIZE, POSITIONS_PX, ROTATIONS_DEG,
                              SCALES_PX, SUPERSAMPLING, ShapesSampler, all_factors, factor_index,
                              load_shapes, render_all, render_sprite)

# Exact areas at circumradius 1: square with half-diagonal 1 (side sqrt 2), the ellipse of semi-axes
# 1 and 0.6, the equilateral triangle.
UNIT_AREA = {0: 2.0, 1: np.pi * 1.0 * 0.6, 2: 3.0 * np.sqrt(3.0) / 4.0}
IMAGES = render_all().reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
FACTORS = all_factors()


def test_every_factor_combination_once_with_a_distinct_image():
    assert FACTORS.shape == (6144, 5) and FACTORS.dtype == np.int64
    assert len({tuple(row) for row in FACTORS}) == 6144
    for k, size in enumerate(FACTOR_SIZES):
        assert set(FACTORS[:, k]) == set(range(size))
    assert np.array_equal(factor_index(FACTORS), np.arange(6144))
    flat = render_all()
    assert flat.shape == (6144, 784) and flat.dtype == np.float32
    assert flat.min() >= 0.0 and flat.max() <= 1.0
    # Every image identifies its factors (rotations lie in [0, 90) degrees, so even the square's
    # four-fold symmetry produces no duplicates).
    assert len({row.tobytes() for row in flat}) == 6144


def test_rendering_is_cached_read_only_and_deterministic():
    assert render_all() is render_all()
    assert not render_all().flags.writeable
    again = render_sprite(2, 3, 5)
    assert np.array_equal(again, render_sprite(2, 3, 5))


def test_every_shape_lies_inside_the_canvas():
    # A blank one-pixel border on every image: nothing touches, let alone crosses, the edge.
    assert IMAGES[:, 0, :].max() == 0 and IMAGES[:, -1, :].max() == 0
    assert IMAGES[:, :, 0].max() == 0 and IMAGES[:, :, -1].max() == 0
    # Shifting never wraps a shape around: an image holds exactly the mass of its centred sprite.
    for shape in range(3):
        for scale in range(4):
            sprite_mass = render_sprite(shape, scale, 0).sum()
            rows = (FACTORS[:, 0] == shape) & (FACTORS[:, 1] == scale) & (FACTORS[:, 2] == 0)
            np.testing.assert_allclose(IMAGES[rows].sum(axis=(1, 2)), sprite_mass, rtol=1e-5)


def test_anti_aliased_area_matches_the_exact_area():
    # Supersampling error bound: only sub-pixels (side h = 1/S) crossed by the outline can be
    # wrong, each by at most h^2, and a curve of length L meets at most 4 (L/h + 1) grid cells.
    # Perimeters at circumradius 1; the ellipse's is bounded by its circumscribed circle's 2*pi
    # (a convex set inside another has the smaller perimeter).
    perimeter = {0: 4 * np.sqrt(2.0), 1: 2 * np.pi, 2: 3 * np.sqrt(3.0)}
    h = 1.0 / SUPERSAMPLING
    for shape in range(3):
        for scale, radius in enumerate(SCALES_PX):
            exact = UNIT_AREA[shape] * radius ** 2
            bound = 4 * (perimeter[shape] * radius / h + 1) * h ** 2
            for rotation in range(8):
                mass = render_sprite(shape, scale, rotation).sum()
                assert abs(mass - exact) <= bound, (shape, scale, rotation, mass, exact)
    # Shapes are told apart by area at equal scale: square > ellipse > triangle (exact areas).
    assert UNIT_AREA[0] > UNIT_AREA[1] > UNIT_AREA[2]


def test_position_factors_move_the_centroid_to_the_stated_pixel():
    cols = np.arange(IMAGE_SIZE) + 0.5
    mass = IMAGES.sum(axis=(1, 2))
    centroid_x = (IMAGES.sum(axis=1) * cols).sum(axis=1) / mass
    centroid_y = (IMAGES.sum(axis=2) * cols).sum(axis=1) / mass
    target_x = np.array(POSITIONS_PX)[FACTORS[:, 3]]
    target_y = np.array(POSITIONS_PX)[FACTORS[:, 4]]
    symmetric = FACTORS[:, 0] < 2  # square and ellipse: point-symmetric, sampled symmetrically
    np.testing.assert_allclose(centroid_x[symmetric], target_x[symmetric], atol=1e-6)
    np.testing.assert_allclose(centroid_y[symmetric], target_y[symmetric], atol=1e-6)
    # The triangle's centroid is its centre in the continuum; discretisation moves it by less
    # than a quarter pixel, far less than the 2-pixel step between positions.
    assert np.abs(centroid_x[~symmetric] - target_x[~symmetric]).max() < 0.25
    assert np.abs(centroid_y[~symmetric] - target_y[~symmetric]).max() < 0.25


def test_rotation_factor_turns_the_ellipse_counter_clockwise_by_the_stated_angle():
    coords = np.arange(IMAGE_SIZE) + 0.5 - IMAGE_SIZE // 2
    x, y = coords[None, :], -coords[:, None]  # y points up
    for rotation, degrees in enumerate(ROTATIONS_DEG):
        image = render_sprite(1, 3, rotation)
        m = image.sum()
        cxx, cyy, cxy = (image * x * x).sum() / m, (image * y * y).sum() / m, (image * x * y).sum() / m
        major_axis = 0.5 * np.degrees(np.arctan2(2 * cxy, cxx - cyy))
        # Within half the 11.25-degree step: each rotation index is the stated angle, no other.
        assert abs(major_axis - degrees) < 90.0 / 8 / 2, (rotation, major_axis, degrees)


def test_sampler_draws_uniform_valid_factors_reproducibly():
    a, b = ShapesSampler(seed=3), ShapesSampler(seed=3)
    fa = a.sample_factors(6000)
    assert fa.shape == (6000, 5) and fa.dtype == np.int64
    assert np.array_equal(fa, b.sample_factors(6000))
    assert not np.array_equal(fa, ShapesSampler(seed=4).sample_factors(6000))
    for k, size in enumerate(FACTOR_SIZES):
        counts = np.bincount(fa[:, k], minlength=size)
        expected = 6000 / size
        sd = np.sqrt(6000 * (1 / size) * (1 - 1 / size))  # binomial standard deviation
        assert len(counts) == size and np.all(np.abs(counts - expected) < 5 * sd)
    # An explicit generator makes draws independent of the sampler's own state.
    g1 = a.sample_factors(10, rng=np.random.default_rng(7))
    g2 = ShapesSampler(seed=99).sample_factors(10, rng=np.random.default_rng(7))
    assert np.array_equal(g1, g2)


def test_sampler_observations_are_the_rendered_images_of_the_factors():
    sampler = ShapesSampler(0)
    factors, images = sampler.sample(50)
    assert images.shape == (50, 784) and images.dtype == np.float32
    assert np.array_equal(images, render_all()[factor_index(factors)])
    images[:] = -1  # a copy: the cache is untouched
    assert render_all().min() == 0.0
    assert np.array_equal(sampler.sample_observations(torch.as_tensor(factors)),
                          render_all()[factor_index(factors)])


@pytest.mark.parametrize("call, message", [
    (lambda s: s.sample_factors(0), "positive integer"),
    (lambda s: s.sample_factors(2.5), "positive integer"),
    (lambda s: s.sample_observations(np.zeros((3, 4), dtype=int)), r"\[n, 5\]"),
    (lambda s: s.sample_observations(np.full((3, 5), 8)), "must lie in"),
    (lambda s: s.sample_observations(np.zeros((3, 5))), "integer"),
    (lambda s: s.sample_factors(3, rng=42), "Generator"),
])
def test_sampler_rejects_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call(ShapesSampler(0))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="seed"):
        ShapesSampler(-1)
    with pytest.raises(ValueError, match="rotation"):
        render_sprite(0, 0, 8)
    with pytest.raises(ValueError, match="test_fraction"):
        load_shapes(test_fraction=1.0)
    with pytest.raises(ValueError, match="seed"):
        load_shapes(seed=-2)


def test_load_shapes_returns_a_reproducible_split_with_factors():
    data = load_shapes(seed=5, test_fraction=0.25)
    assert data.name == "shapes" and data.n_classes == 3 and data.image_shape == (28, 28)
    assert data.n_train + data.n_test == 6144 and data.n_test == 1536
    assert data.factor_names == FACTOR_NAMES
    assert data.factors.shape == (6144, 5)
    assert len({tuple(r) for r in data.factors}) == 6144  # train and test are disjoint
    for split in ("train", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        factors = getattr(data, f"factors_{split}")
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert np.array_equal(y.numpy(), factors[:, 0])            # label = shape factor
        assert np.array_equal(x.numpy(), render_all()[factor_index(factors)])
    again = load_shapes(seed=5, test_fraction=0.25)
    assert np.array_equal(again.factors_test, data.factors_test)
    other = load_shapes(seed=6, test_fraction=0.25)
    assert not np.array_equal(other.factors_test, data.factors_test)
    via_data = load_dataset("shapes", test_fraction=0.25, seed=5)
    assert via_data.name == "shapes"
    assert np.array_equal(via_data.factors_test, data.factors_test)  # the seed reaches the split


def test_any_factor_can_be_the_label():
    shape, scale = load_shapes(seed=0), load_shapes(seed=0, label="scale")
    assert torch.equal(shape.x_train, scale.x_train)                         # the same split
    assert scale.n_classes == 4 and torch.equal(scale.y_train, torch.as_tensor(scale.factors_train[:, 1]))
    assert torch.equal(shape.y_test, torch.as_tensor(shape.factors_test[:, 0]))
    with pytest.raises(ValueError, match="label must be one of the factors"):
        load_shapes(label="colour")
