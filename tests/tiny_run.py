"""A training config that runs in about a second on the 8x8 digits, shared by the training tests."""
from ssvae_lib.train import TrainConfig

TINY = dict(dataset="digits", n_labelled=50, epochs=2, batch_size=64, labelled_batch_size=25, hidden_dim=32,
            style_dim=4, n_samples=2, iwae_samples=4, iwae_examples=60, max_train=600, max_test=200,
            alpha=10.0, device="cpu")


def tiny_config(**overrides) -> TrainConfig:
    """A run of about a second on the 8x8 digits (10 steps per epoch)."""
    return TrainConfig(**{**TINY, **overrides})
