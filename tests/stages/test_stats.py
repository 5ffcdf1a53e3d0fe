import numpy as np
import pytest
import torch

from tlstudy.data.normalisation import Summary, channel_stats


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    # Skewed per-channel values, so a wrong merge shows up in the variance.
    x = torch.randint(0, 256, (37, 3, 9, 11), generator=g, dtype=torch.uint8)
    x[:, 0] = (x[:, 0] // 4) + 180
    return x


@pytest.mark.parametrize("batch_size", [1, 2, 5, 8, 36, 37, 100])
def test_merged_batches_equal_numpy_over_the_whole_set(images, batch_size):
    s = channel_stats(images, batch_size=batch_size)
    ref = images.numpy().astype(np.float64) / 255.0
    np.testing.assert_allclose(s.mean.numpy(), ref.mean(axis=(0, 2, 3)), atol=1e-6, rtol=0)
    np.testing.assert_allclose(s.var.sqrt().numpy(), ref.std(axis=(0, 2, 3)), atol=1e-6, rtol=0)
    assert s.n == 37 * 9 * 11


def test_merge_of_two_summaries_is_the_summary_of_both():
    a, b = torch.rand(4, 3, 5, 5, dtype=torch.float64), torch.rand(9, 3, 5, 5, dtype=torch.float64) * 3
    merged = Summary.of(a).merge(Summary.of(b))
    whole = Summary.of(torch.cat([a, b]))
    assert merged.n == whole.n
    torch.testing.assert_close(merged.mean, whole.mean)
    torch.testing.assert_close(merged.m2, whole.m2)


def test_no_images_is_an_error():
    with pytest.raises(ValueError, match="no images"):
        channel_stats(torch.empty(0, 3, 4, 4, dtype=torch.uint8))
